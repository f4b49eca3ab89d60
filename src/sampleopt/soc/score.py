"""The score of a controlled chain's marginals, fitted on its own rollouts
(docs/soc.md section 3.2).

Along a sampled path x_{k+1} = m(x_k, k) + s_k xi_k, so E[-xi_k / s_k | x_{k+1}] is the
score of x_{k+1}'s marginal (Tweedie's identity for one Gaussian transition).
Regressing a network s(x, t_{k+1}) onto -xi_k / s_k, weighted by s_k^2,

    L = mean_{k, paths} | s_k s(x_{k+1}, t_{k+1}) + xi_k |^2,

is denoising score matching on the chain's own transitions: no trace, any dimension, and
refitting it on fresh rollouts (warm-started) follows the marginals as the control
changes.
"""

from __future__ import annotations

import copy

import torch

from sampleopt.diffusion.parameterization import to_eps
from sampleopt.errors import UsageError


class TransitionScore:
    """A score model s(x, t) (n, *state) x (n,) -> like x, fitted by :meth:`fit`."""

    def __init__(self, model: torch.nn.Module, *, lr: float = 1e-3, batch: int = 512):
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"the score model must be a torch module s(x, t), got {model!r}")
        self.model = model
        self.batch = int(batch)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        return self.checked(self.model(x, tt), x)

    @staticmethod
    def checked(out, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(
                f"the score network must return the state's shape {tuple(x.shape)}, got {got}"
            )
        return out

    def fit(self, path, noises, scales, times, iterations: int, generator=None) -> float:
        """``iterations`` Adam steps on minibatches of (k, path) pairs drawn from ``path``
        (K + 1, n, ...), ``noises`` (K, n, ...), noise ``scales`` s_k and ``times``
        t_0 .. t_K; steps without noise are skipped. Returns the last loss."""
        ks = [k for k, s in enumerate(scales) if s > 0]
        if not ks or iterations == 0:
            return float("nan")
        K, n = len(ks), path.shape[1]
        kt = torch.tensor(ks, device=path.device)
        s_all = torch.tensor(scales, dtype=path.dtype, device=path.device)
        t_all = torch.tensor(times, dtype=path.dtype, device=path.device)
        loss = torch.zeros(())
        with torch.enable_grad():
            for _ in range(iterations):
                size = min(self.batch, K * n)
                pick = torch.randint(0, K * n, (size,), generator=generator, device=path.device)
                k, i = kt[pick // n], pick % n
                x, xi = path[k + 1, i], noises[k, i]
                s = s_all[k].reshape(-1, *([1] * (x.ndim - 1)))
                pred = self.checked(self.model(x, t_all[k + 1]), x)
                loss = ((s * pred + xi) ** 2).flatten(1).sum(1).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        return float(loss.detach())


class DenoiserScore(torch.nn.Module):
    """The score of a diffusion sampler's marginals from a trainable copy of its
    denoiser: s(x, t) = -eps(x, tau) / s_tau at the training time tau = (1 - t) T
    (rounded, at least 1; per row), so fitting starts from the base model's own score,
    exact for the base's marginals. The time-reversed BSDE's default score for diffusion
    bases."""

    def __init__(self, sampler):
        super().__init__()
        self.denoiser = copy.deepcopy(sampler.denoiser).requires_grad_(True)
        self.schedule = copy.deepcopy(sampler.schedule).requires_grad_(False)
        self.T = int(sampler.schedule.num_train_steps)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tau = ((1.0 - t) * self.T).round().clamp(1, self.T).long()
        ab = self.schedule.alphabar().to(x.dtype)[tau].reshape(-1, *([1] * (x.ndim - 1)))
        a_t, s_t = ab.sqrt(), (1 - ab).sqrt()
        pred = self.denoiser(x, tau)
        kind = self.denoiser.prediction
        eps = pred if kind == "eps" else to_eps(pred, kind, x, a_t, s_t)
        return -eps / s_t
