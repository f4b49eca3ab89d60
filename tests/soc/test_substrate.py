"""The continuous-time substrate (docs/soc.md section 1): the SDE chain's exact linear
part, the control cost as the path KL, initial laws, and the derivatives of the Ito
terms."""

from __future__ import annotations

import math

import torch

import sampleopt as so
from sampleopt.samplers import ControlledChain, Gaussian, GaussianMixture, SDEChain
from sampleopt.samplers.initial import initial_kl
from sampleopt.soc import TimeField
from sampleopt.soc.derivatives import laplacian

F64 = torch.float64
A = torch.tensor([[0.0, 1.0], [-1.0, -0.5]], dtype=F64)


def test_the_linear_part_is_integrated_exactly():
    """With g = 0 the chain's end is e^{A T} x_0 to round-off, on a coarse grid."""
    chain = SDEChain(
        Gaussian(torch.zeros(2, dtype=F64), 1.0), [0.0, 0.7, 2.0], diffusion=0.0, linear=A
    )
    x0 = torch.randn(5, 2, dtype=F64)
    end = chain.sample(5, x0=x0)
    torch.testing.assert_close(end, x0 @ torch.linalg.matrix_exp(2 * A).T, rtol=1e-12, atol=1e-12)


def test_the_control_cost_is_the_path_kl():
    """sum_k |u(x_k, t_k)|^2 dt_k / 2 along paths equals the path KL's running cost."""
    torch.manual_seed(0)
    times = [0.0, 0.1, 0.3, 0.6, 1.0]
    base = SDEChain(Gaussian(torch.zeros(2, dtype=F64), 1.0), times, diffusion=lambda t: 1 + t)
    net = TimeField(2, zero_init=False).to(F64)
    chain = ControlledChain(base, net)
    kl = so.PathKL(base)
    x = chain.sample_x0(7)
    cost = torch.zeros(7, dtype=F64)
    direct = torch.zeros(7, dtype=F64)
    with torch.no_grad():
        for k in range(4):
            m = chain.mean(x, k)
            cost += kl.cost(chain, x, k, m)
            u = net(x, torch.full((7,), times[k], dtype=F64))
            direct += (u**2).sum(1) * (times[k + 1] - times[k]) / 2
            x = chain.add_noise(m, k, torch.randn_like(x))
    torch.testing.assert_close(cost, direct, rtol=1e-12, atol=1e-12)


def test_the_costate_parameterisation_is_u_equals_minus_g_phi():
    base = SDEChain(Gaussian(torch.zeros(1, dtype=F64), 1.0), [0.0, 0.25, 1.0], diffusion=2.0)
    phi = TimeField(1, zero_init=False).to(F64)
    chain = ControlledChain(base, phi, parameterization="costate")
    x = torch.randn(4, 1, dtype=F64)
    with torch.no_grad():
        shift = chain.mean(x, 1) - base.mean(x, 1)
        u = -2.0 * phi(x, torch.full((4,), 0.25, dtype=F64))
    torch.testing.assert_close(shift, 2.0 * 0.75 * u)  # g dt u


def test_initial_laws():
    q = Gaussian([0.5, -1.0], [2.0, 0.5], learnable=True)
    p = Gaussian([0.0, 0.0], 1.0)
    x = q.sample(200_000, torch.Generator().manual_seed(0))
    exact = sum(math.log(1 / s) + (s * s + m * m) / 2 - 0.5 for m, s in ((0.5, 2.0), (-1.0, 0.5)))
    terms = initial_kl(q, p, x).detach()
    assert abs(float(terms.mean()) - exact) < 4 * float(terms.std()) / len(terms) ** 0.5
    mix = GaussianMixture([-1.0, 2.0], 0.5, [0.25, 0.75])
    y = torch.linspace(-5, 6, 20001, dtype=F64)[:, None]
    total = float(mix.log_prob(y).exp().sum() * (y[1] - y[0]))
    assert abs(total - 1) < 1e-6


def test_the_exact_laplacian_is_the_hessian_trace_and_hutchinson_is_unbiased():
    torch.manual_seed(0)
    net = TimeField(3, zero_init=False).to(F64)
    t = torch.rand(4, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    exact = laplacian(lambda z: net(z, t), x, trace="exact")
    for i in range(4):
        for c in range(3):
            h = torch.autograd.functional.hessian(
                lambda z, i=i, c=c: net(z[None], t[i : i + 1])[0, c], x[i]
            )
            torch.testing.assert_close(exact[i, c], h.diagonal().sum(), rtol=1e-10, atol=1e-12)
    runs = torch.stack(
        [
            laplacian(
                lambda z: net(z, t),
                x,
                trace="hutchinson",
                generator=torch.Generator().manual_seed(s),
            )
            for s in range(400)
        ]
    )
    se = runs.std(0) / 20
    assert ((runs.mean(0) - exact).abs() <= 4 * se + 1e-12).all()
    affine = laplacian(lambda z: 2 * z + 1, x, trace="hutchinson")
    assert torch.equal(affine, torch.zeros_like(x))
