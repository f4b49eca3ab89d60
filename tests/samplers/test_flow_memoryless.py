"""The memoryless flow SDE against closed forms (docs/soc.md section 1).

For Gaussian data x_1 ~ N(mu, c^2 I) the linear interpolant x_t = t x_1 + (1 - t) x_0 is
Gaussian with mean t mu and variance sig_t^2 = t^2 c^2 + (1 - t)^2, and its exact velocity
is v(x, t) = E[x_1 - x_0 | x_t = x] = mu + a_t (x - t mu), a_t = (t c^2 - (1 - t)) /
sig_t^2 (derived here by hand). Then:

* the chain ends at the data law N(mu, c^2 I). The Euler chain is affine in x; iterating
  its mean and variance recursions for mu = (1, -2), c = 0.5, 400 steps gives end errors
  of about 1e-8 (mean) and 2e-6 (variance), so the allowance is 1e-3 on top of 4 standard
  errors;
* in continuous time the SDE's propagator from s to 1 is c^2 s / sig_s^2 (the linear
  drift 2 a_t - 1/t integrates to log(sig_t^2 / t)), so corr(X_{t_0}, X_1) = c t_0 /
  sig_{t_0}, about 1.3e-3 here; the Euler chain's own value is about -6e-6. The test
  allows 4 / sqrt(n) + 2 c t_0. The probability-flow ODE (g = 0, drift v) is the affine
  map x_1 - mu = (c / sig_{t_0}) (x_{t_0} - t_0 mu), a correlation of 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sampleopt.errors import UsageError
from sampleopt.samplers.flow import MemorylessFlowSDE, memoryless_diffusion
from sampleopt.samplers.initial import Gaussian
from sampleopt.samplers.sde import SDEChain

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
C = 0.5
N = 20000
STEPS = 400


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact velocity of the linear interpolant for data N(MU, C^2 I)."""
    t = t[:, None]
    mu = MU.to(x.dtype)
    a = (t * C**2 - (1 - t)) / (t**2 * C**2 + (1 - t) ** 2)
    return mu + a * (x - t * mu)


def corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-coordinate sample correlation of two (n, d) samples."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).mean(0) / (a.std(0, correction=0) * b.std(0, correction=0))


def run(chain, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x0 = chain.sample_x0(N, g)
        return x0.double(), chain.sample(N, x0=x0, generator=g).double()


def test_drift_is_velocity_plus_half_g2_score():
    chain = MemorylessFlowSDE(velocity, 2, steps=10)
    x = torch.randn(5, 2, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        tt = torch.full((5,), t, dtype=torch.float64)
        g2 = memoryless_diffusion(t) ** 2
        assert g2 == pytest.approx(2 * (1 - t) / t)
        expected = velocity(x, tt) + g2 / 2 * (t * velocity(x, tt) - x) / (1 - t)
        torch.testing.assert_close(chain.drift(x, t), expected)
        torch.testing.assert_close(chain.score(x, t), (t * velocity(x, tt) - x) / (1 - t))


def test_grid_and_defaults():
    chain = MemorylessFlowSDE(velocity, (2,), steps=9)
    assert chain.memoryless and chain.state_shape == (2,) and chain.num_steps == 9
    assert chain.times() == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert all(chain.noise_scale(k) > 0 for k in range(9))  # noise at every step
    assert float(chain.initial.log_std.exp()[0]) == pytest.approx(0.9)
    late = MemorylessFlowSDE(velocity, 2, steps=4, t0=0.2, t1=0.6)
    assert late.times() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])


def test_ends_at_the_data_law():
    x0, x = run(MemorylessFlowSDE(velocity, 2, steps=STEPS))
    allowance = 1e-3
    se_mean = C / math.sqrt(N)
    se_var = C**2 * math.sqrt(2 / (N - 1))
    assert ((x.mean(0) - MU).abs() < 4 * se_mean + allowance).all(), x.mean(0)
    assert ((x.var(0) - C**2).abs() < 4 * se_var + allowance).all(), x.var(0)


def test_stopping_early_ends_at_that_marginal():
    t1 = 0.9
    x0, x = run(MemorylessFlowSDE(velocity, 2, steps=200, t1=t1), seed=1)
    var = t1**2 * C**2 + (1 - t1) ** 2
    assert ((x.mean(0) - t1 * MU).abs() < 4 * math.sqrt(var / N) + 1e-3).all()
    assert ((x.var(0) - var).abs() < 4 * var * math.sqrt(2 / (N - 1)) + 1e-3).all()


def test_memoryless_but_the_ode_remembers():
    chain = MemorylessFlowSDE(velocity, 2, steps=STEPS)
    x0, x = run(chain, seed=2)
    residual = C * chain.t0 / (1 - chain.t0)  # continuous time, about 1.3e-3
    assert (corr(x0, x).abs() < 4 / math.sqrt(N) + 2 * residual).all(), corr(x0, x)
    ode = SDEChain(
        Gaussian(torch.zeros(2), 1 - chain.t0), chain.times(), drift=velocity_float, diffusion=0.0
    )
    y0, y = run(ode, seed=2)
    assert (corr(y0, y) > 0.5).all(), corr(y0, y)


def velocity_float(x, t):
    """The velocity with a python-float time, the drift of the probability-flow ODE."""
    return velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype))


class Linear(nn.Module):
    def __init__(self, out=2):
        super().__init__()
        self.lin = nn.Linear(3, out)

    def forward(self, x, t):
        return self.lin(torch.cat([x, t[:, None]], 1))


def test_a_module_velocity_is_a_submodule_and_is_shape_checked():
    chain = MemorylessFlowSDE(Linear(), 2, steps=3)
    assert len(list(chain.parameters())) == 2
    assert chain.sample(4).shape == (4, 2)
    with pytest.raises(UsageError, match="velocity must return"):
        MemorylessFlowSDE(Linear(out=3), 2, steps=3).sample(4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"t0": 0.0}, "t0"),
        ({"t0": -0.1}, "t0"),
        ({"t0": 1.0}, "t0"),
        ({"t0": 0.5, "t1": 0.4}, "t0"),
        ({"t0": float("nan")}, "t0"),
        ({"t0": "0.1"}, "t0"),
        ({"t1": 1.5}, "t1"),
        ({"t1": 0.0}, "t1"),
        ({"dim_or_shape": 0}, "dim_or_shape"),
        ({"dim_or_shape": (2, 3)}, "dim_or_shape"),
        ({"velocity": 3}, "velocity"),
    ],
)
def test_bad_inputs_raise_usage_error(kwargs, match):
    args = {"velocity": velocity, "dim_or_shape": 2, **kwargs}
    with pytest.raises(UsageError, match=match):
        MemorylessFlowSDE(args.pop("velocity"), args.pop("dim_or_shape"), **args)
