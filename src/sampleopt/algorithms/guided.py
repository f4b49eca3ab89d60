"""Guided optimisation rounds: Algorithms 1 and 2 of Guo et al. (2024) (docs/guidance.md
section 3).

The model is not changed by guidance; the samples are. Round k, with z_k the current n
samples (z_0 unguided samples of the base):

1. g_i = grad f(z_k,i) per sample (autograd, or zeroth order for a black-box f) and the
   target y_i = g_i^T z_k,i + delta;
2. Algorithm 2 only, from round ``adapt_from`` on: ``adapt_steps`` Adam steps of
   denoising score matching of the base network on z_k (the model follows its samples);
3. z_{k+1}: n guided samples, sample i guided by (g_i, y_i).

Algorithm 1 (``adapt_from=None``) converges to a regularised optimum: the pretrained
model's prior pulls every round back toward the data. Algorithm 2 moves the prior
itself and, for concave f on subspace data, reaches the optimum over the subspace at
rate O(1/K) (the paper's theorem). ``delta`` is the per-round increase the target asks
for: larger moves faster and overshoots sooner.

Round r draws from a generator seeded by (seed, r), so a run resumed from
:meth:`GuidedOptimization.state_tensors` is bit-identical to an uninterrupted one. With
``noise="same"`` every round redraws with round 0's noise instead, so guided sample i is
a refinement of z_0,i and the gradient that steers it was taken at the same image's
previous version: choose it when f's gradient is local to an image (a classifier), where
with fresh noise sample i would be a new image steered by an unrelated one's gradient.
Each round returns a one-row :class:`History` (step = round, reward_mean = mean f of the
new samples, value = -mean f, network_evals = forward rows through the network so far,
sampling and score matching alike; look-ahead guidance adds one backward pass per
sampling row, not counted there).
"""

from __future__ import annotations

import contextlib
import math

import torch

from sampleopt.algorithms.base import positive_int
from sampleopt.algorithms.history import History
from sampleopt.checks import check_finite
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.guidance.denoiser import GuidedDenoiser
from sampleopt.guidance.targets import guidance_targets
from sampleopt.samplers.diffusion import DiffusionSampler
from sampleopt.training.dsm import dsm_loss


class GuidedOptimization:
    """Algorithm 1 (``adapt_from=None``) or Algorithm 2 (``adapt_from`` = the first round
    that fine-tunes) over a diffusion sampler whose denoiser is a :class:`GuidedDenoiser`.

    Args:
        sampler: a sampleopt diffusion sampler (DDPM, DDIM, reverse SDE, probability flow)
            built on the guided denoiser.
        f: the objective, a per-sample callable f(x) -> (n,) to maximise.
        delta: the target's step y = g^T z + delta.
        batch_size: samples per round (each its own optimisation path).
        gradient: :class:`AutogradGradient` (default) or :class:`ZerothOrderGradient`.
        adapt_from, adapt_lr, adapt_steps: Algorithm 2's score-matching steps (Adam on
            the base network's trainable parameters).
        top_k: the "top f" of a round is the mean of its k largest values.
        noise: "fresh" (new noise each round) or "same" (round 0's noise every round).
        seed: the random streams (see the module docstring).
    """

    def __init__(
        self,
        sampler: DiffusionSampler,
        f,
        *,
        delta: float,
        batch_size: int = 32,
        gradient=None,
        adapt_from: int | None = None,
        adapt_lr: float = 1e-5,
        adapt_steps: int = 1,
        top_k: int = 4,
        noise: str = "fresh",
        seed: int = 0,
    ):
        if not isinstance(sampler, DiffusionSampler) or not isinstance(
            sampler.denoiser, GuidedDenoiser
        ):
            raise UsageError(
                "GuidedOptimization needs a diffusion sampler built on a GuidedDenoiser, "
                "e.g. DDPMSampler(GuidedDenoiser(net, schedule, LookAheadGuidance()), schedule)"
            )
        if not callable(f):
            raise UsageError(f"f must be a per-sample callable f(x) -> (n,), got {f!r}")
        if isinstance(delta, bool) or not (isinstance(delta, int | float) and math.isfinite(delta)):
            raise UsageError(f"delta must be a finite number, got {delta!r}")
        self.n = positive_int("batch_size", batch_size)
        self.top_k = min(positive_int("top_k", top_k), self.n)
        if adapt_from is not None:
            positive_int("adapt_steps", adapt_steps)
            if isinstance(adapt_from, bool) or not (
                isinstance(adapt_from, int) and adapt_from >= 0
            ):
                raise UsageError(f"adapt_from must be None or an integer >= 0, got {adapt_from!r}")
            if not (isinstance(adapt_lr, int | float) and math.isfinite(adapt_lr) and adapt_lr > 0):
                raise UsageError(f"adapt_lr must be a finite number > 0, got {adapt_lr!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"seed must be an integer, got {seed!r}")
        if noise not in ("fresh", "same"):
            raise UsageError(f"noise must be 'fresh' or 'same', got {noise!r}")
        self.noise = noise
        self.sampler, self.f, self.delta = sampler, f, float(delta)
        self.guided: GuidedDenoiser = sampler.denoiser
        self.gradient, self.seed = gradient, seed
        self.adapt_from, self.adapt_steps = adapt_from, adapt_steps
        self.params = [p for p in self.guided.denoiser.parameters() if p.requires_grad]
        if adapt_from is not None and not self.params:
            raise UsageError(
                "Algorithm 2 (adapt_from) needs a base network with trainable parameters"
            )
        self.optimizer = (
            torch.optim.Adam(self.params, lr=float(adapt_lr)) if adapt_from is not None else None
        )
        self.round = 0  # rounds done; z is the samples after that many rounds
        self.z: torch.Tensor | None = None
        self.values: torch.Tensor | None = None  # f(z)
        self.network_evals = 0
        self.adapt_loss = float("nan")

    @property
    def algorithm(self) -> int:
        return 1 if self.adapt_from is None else 2

    def generator(self, r: int) -> torch.Generator:
        """Round r's generator (round 0's for every round with ``noise="same"``)."""
        r = 0 if self.noise == "same" else r
        p = next(self.sampler.parameters(), None)
        device = p.device if p is not None else "cpu"
        return torch.Generator(device=device).manual_seed((self.seed * 1_000_003 + r) % 2**62)

    @contextlib.contextmanager
    def _unguided(self):
        guidance, strength = self.guided.guidance, self.guided.guidance.strength
        guidance.strength = 0.0
        try:
            yield
        finally:
            guidance.strength = strength

    def _sample(self, generator) -> torch.Tensor:
        with torch.no_grad():
            z = self.sampler.sample(self.n, generator=generator)
        self.network_evals += self.sampler.num_steps * self.n
        return check_finite(z, f"the samples of round {self.round + 1}")

    def start(self) -> torch.Tensor:
        """z_0: unguided samples of the base (round 0); done by the first :meth:`step`."""
        with self._unguided():
            self.z = self._sample(self.generator(0))
        self.values = self._evaluate(self.z)
        return self.z

    def _evaluate(self, z):
        with torch.no_grad():
            v = self.f(z)
        if not isinstance(v, torch.Tensor) or v.shape != (z.shape[0],):
            raise UsageError(
                f"f must return shape ({z.shape[0]},) (one value per sample), got "
                f"{getattr(v, 'shape', type(v).__name__)}"
            )
        return check_finite(v.detach(), "the objective's values")

    def _adapt(self, z, generator) -> None:
        net = self.guided.denoiser
        for _ in range(self.adapt_steps):
            loss = dsm_loss(net, self.guided.schedule, z, generator)
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteError(
                    f"the score-matching loss is not finite in round {self.round + 1}; "
                    "the model is unchanged"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.adapt_loss = float(loss.detach())
            self.network_evals += z.shape[0]

    def step(self) -> History:
        """One round (see the module docstring); returns its one-row history."""
        if self.z is None:
            self.start()
        gen = self.generator(self.round + 1)
        g, y, _ = guidance_targets(self.f, self.z, self.delta, self.gradient, gen)
        if self.adapt_from is not None and self.round >= self.adapt_from:
            self._adapt(self.z, gen)
        self.guided.guidance.set_target(g, y)
        self.z = self._sample(gen)
        self.values = self._evaluate(self.z)
        self.round += 1
        mean = self.values.mean()
        return History(
            step=torch.tensor([self.round]),
            sampling_steps=torch.tensor([(self.round + 1) * self.sampler.num_steps]),
            reward_mean=mean.reshape(1).double(),
            value=(-mean).reshape(1).double(),
            network_evals=torch.tensor([self.network_evals]),
        )

    def top(self) -> float:
        """The mean of the current round's ``top_k`` largest values of f."""
        return float(self.values.topk(self.top_k).values.mean())

    def run(self, rounds: int, *, callback=None) -> History:
        """``rounds`` more rounds; ``callback(history_row, self)`` after each."""
        parts = []
        for _ in range(positive_int("rounds", rounds)):
            parts.append(self.step())
            if callback is not None:
                callback(parts[-1], self)
        return History.cat(parts)

    # -- state for checkpoints ---------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a bit-identical resume needs (the network's weights included when
        Algorithm 2 changes them)."""
        if self.z is None:
            self.start()
        out = {
            "round": torch.tensor(self.round),
            "z": self.z.clone(),
            "network_evals": torch.tensor(self.network_evals),
        }
        if self.optimizer is not None:
            for i, p in enumerate(self.params):
                out[f"param.{i}"] = p.detach().clone()
            for i, st in self.optimizer.state_dict()["state"].items():
                for k, v in st.items():
                    out[f"adam.{i}.{k}"] = torch.as_tensor(v).clone()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors` (same model and settings)."""
        self.round = int(t["round"])
        self.z = t["z"].clone()
        self.network_evals = int(t["network_evals"])
        if self.optimizer is not None:
            with torch.no_grad():
                for i, p in enumerate(self.params):
                    p.copy_(t[f"param.{i}"])
            state = self.optimizer.state_dict()
            for key, v in t.items():
                if key.startswith("adam."):
                    _, i, k = key.split(".", 2)
                    state["state"].setdefault(int(i), {})[k] = v.clone()
            self.optimizer.load_state_dict(state)
        self.values = self._evaluate(self.z)
