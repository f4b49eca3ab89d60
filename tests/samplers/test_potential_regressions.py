"""Regressions: the mixture potential used stale logits after updates that do not bump
the version counter, and kept float32 rounding after .double()."""

import torch

from sampleopt import (
    GaussianMixturePotential,
    GibbsKL,
    ImplicitDiffusion,
    LangevinSampler,
    Objective,
    hex_centres,
)


def test_mixture_bias_cache_goes_stale_when_logits_change_without_a_version_bump():
    """GaussianMixturePotential._bias caches log_softmax(logits) - |c|^2/2 under no_grad,
    keyed on (logits._version, data_ptr, requires_grad). Writes that do not bump the
    parameter's version counter -- p.data.add_/copy_ (hand-written SGD loops) and
    torch.optim.Adam(fused=True) -- leave the cache stale, so grad_x / energy /
    param_vjp under no_grad keep using the OLD logits."""
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pot = GaussianMixturePotential(hex_centres(), torch.zeros(6)).double()
    with torch.no_grad():
        pot.grad_x(x)  # fills the cache
    pot.logits.data.add_(torch.arange(6.0, dtype=torch.float64))
    with torch.no_grad():
        cached = pot.grad_x(x)
    fresh = pot.grad_x(x)  # grad mode on: bypasses the cache
    torch.testing.assert_close(cached, fresh)


def test_implicit_diffusion_with_fused_adam_samples_from_stale_logits():
    """ImplicitDiffusion accepts any torch optimiser; with Adam(fused=True) the
    Langevin steps (under no_grad) keep sampling the initial mixture forever."""
    pot = GaussianMixturePotential(hex_centres(), torch.zeros(6)).double()
    ref = GaussianMixturePotential(hex_centres(), torch.tensor([2.0, 0, 0, 0, 0, 0])).double()
    zero = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731
    objective = Objective(zero, lam=1.0, divergence=GibbsKL(ref, "forward"))
    opt = torch.optim.Adam(pot.parameters(), lr=0.05, fused=True)
    alg = ImplicitDiffusion(
        LangevinSampler(pot, 0.1),
        objective,
        n_particles=200,
        lr=0.05,
        optimizer=opt,
        generator=torch.Generator().manual_seed(0),
    )
    alg.run(50)
    x = alg.particles
    with torch.no_grad():
        used = pot.grad_x(x)
    torch.testing.assert_close(used, pot.grad_x(x))


def test_mixture_double_is_only_float32_accurate():
    """GaussianMixturePotential precomputes _half_sq_norms = |c|^2 / (2 sigma^2) in the
    construction dtype; .double() converts the buffer but keeps its float32 rounding,
    so the float64 module's energy/grad_x/param_vjp are off by ~1e-7 relative."""
    centres = hex_centres().double()  # float32-rounded values, exact in float64
    logits = torch.tensor([0.5, -0.25, 0.0, 1.0, -1.0, 0.25], dtype=torch.float64)
    pot = GaussianMixturePotential(centres, logits).double()
    x = 3 * torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sq = ((x[:, None, :] - centres) ** 2).sum(-1)
    exact = -torch.logsumexp(torch.log_softmax(logits, 0) - sq / 2, 1)
    torch.testing.assert_close(pot(x).detach(), exact, rtol=1e-12, atol=1e-12)


def test_hex_reward_double_has_float64_constants():
    """HexReward built in float32 and converted with .double() matches the reward
    computed in float64 from the paper's constants."""
    from sampleopt import HexReward

    reward = HexReward().double()
    x = torch.tensor([[1.0, 2.0], [4.0, 3.8], [-1.0, 0.5]], dtype=torch.float64)
    q = (x[:, 0] - 4.0) ** 2 + (x[:, 1] - 3.8) ** 2
    exact = (x[:, 0] >= 0) * torch.exp(-q / 20) / 2.5
    torch.testing.assert_close(reward(x), exact, rtol=1e-15, atol=1e-15)
    smooth = HexReward(smooth=True).double()
    torch.testing.assert_close(
        smooth(x), torch.sigmoid(x[:, 0] / 0.5) * torch.exp(-q / 20) / 0.7, rtol=1e-15, atol=1e-15
    )
