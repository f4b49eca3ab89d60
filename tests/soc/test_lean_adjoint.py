"""The discrete lean adjoint (docs/soc.md section 2) is the gradient of -r(x_K) / lam
through the *base's* steps with the path's noise held fixed: checked against autograd
to float64 round-off, on a nonlinear SDE base and on a diffusion sampler."""

from __future__ import annotations

import torch

import sampleopt as so
from sampleopt import testing
from sampleopt.samplers import ControlledChain, Gaussian, SDEChain
from sampleopt.soc import TimeField
from sampleopt.soc.common import lean_adjoint, terminal_costate

F64 = torch.float64


def reward(x):
    return -((x - 0.7) ** 2).sum(1) + torch.sin(3 * x).sum(1)


def autograd_adjoint(base, path, lam):
    """d(-r(x_K)/lam)/dx_k by autograd through x_{k+1} = m_base(x_k) + e_k, with the
    offsets e_k = path[k+1] - m_base(path[k]) held fixed."""
    K = path.shape[0] - 1
    with torch.no_grad():
        offsets = [path[k + 1] - base.mean(path[k], k) for k in range(K)]
    xs = [path[0].clone().requires_grad_(True)]
    for k in range(K):
        x = base.mean(xs[-1], k) + offsets[k]
        x.retain_grad()
        xs.append(x)
    (-reward(xs[-1]).sum() / lam).backward()
    return torch.stack([x.grad for x in xs])


def check(base, lam=0.3):
    torch.manual_seed(0)
    net = TimeField(2, zero_init=False).to(F64)
    chain = ControlledChain(base, net)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        path = torch.stack(chain.sample(16, generator=gen, return_path=True))
    obj = so.Objective(reward, lam=lam, divergence=so.PathKL(base))
    a_K = terminal_costate(obj, path[-1], lambda o, x: o.reward(x))
    adj, means = lean_adjoint(base, path, a_K)
    exact = autograd_adjoint(base, path, lam)
    torch.testing.assert_close(adj, exact, rtol=1e-12, atol=1e-12)
    assert adj.abs().max() > 0.1  # the check compares something


def test_lean_adjoint_on_a_nonlinear_sde_equals_autograd():
    base = SDEChain(
        Gaussian(torch.zeros(2, dtype=F64), 1.0),
        torch.linspace(0, 1, 9, dtype=F64),
        drift=lambda x, t: torch.tanh(x) * (1 + t) - 0.3 * x**3,
        diffusion=lambda t: 0.5 + t,
        linear=torch.tensor([[0.0, 1.0], [-1.0, -0.5]], dtype=F64),
    ).to(F64)
    check(base)


def test_lean_adjoint_on_a_diffusion_sampler_equals_autograd():
    check(testing.exact_gaussian_sampler([0.5, -1.0], so.ReverseSDESampler, steps=6))
