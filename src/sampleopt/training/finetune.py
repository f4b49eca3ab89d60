"""Reward fine-tuning of a pretrained diffusion sampler (Marion et al. 2025, 5.2).

:class:`FineTuner` minimises l(theta) = -E[r(x_K)] + lam * KL(P_theta || P_ref) over
the sampler's parameters with Adam, one theta update per :meth:`FineTuner.step`:

* ``method="implicit"``: finite-time Implicit Diffusion
  (:class:`~sampleopt.algorithms.QueuedImplicitDiffusion`), one batched sampling step
  and one adjoint sweep per update;
* ``"adjoint"``, ``"unrolled"``, ``"truncated"`` (DRaFT-K, ``truncate_steps``),
  ``"score-function"`` (REINFORCE with the leave-one-out baseline; ``ppo_clip`` for
  DDPO's surrogate): the nested loop, a fresh K-step sampling run per update.

``accumulate`` batches are averaged per update (nested methods).

**Several processes.** Under ``accelerate launch`` (or any initialised
``torch.distributed`` process group: gloo on CPU, NCCL on GPU) each process computes
the gradient of its own batches and the gradients are averaged with an all-reduce
before Adam's step, exactly what DistributedDataParallel does (the estimators take
explicit vector-Jacobian products, which DDP's backward hooks would not see). Micro-
batch m of update u draws its noise from a generator seeded by (seed, u, m), and
process r takes micro-batches r * accumulate .. (r + 1) * accumulate - 1, so P
processes with ``accumulate=a`` compute the same update as one process with
``accumulate=P * a`` (tested). The queue of ``method="implicit"`` is per process
(its batches seeded by rank). Every update reports
the mean reward of its batch and the forward network evaluations spent so far
(``network_evals``: rows through the denoiser, sampling and recomputation alike), the
budget the methods are compared at. :meth:`state_tensors` / :meth:`load_state_tensors`
hold everything a bit-identical resume needs (parameters, Adam's moments, the random
the queue).
"""

from __future__ import annotations

import torch

from sampleopt.algorithms.finite_time import QueuedImplicitDiffusion
from sampleopt.checks import check_finite
from sampleopt.errors import UsageError
from sampleopt.estimators import (
    AdjointEstimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
)
from sampleopt.estimators.common import resolve_params
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain

METHODS = ("implicit", "adjoint", "unrolled", "truncated", "score-function")
# forward network evaluations per sample and step of one update
_EVALS = {"adjoint": 2, "unrolled": 1, "truncated": 1, "score-function": 2, "implicit": 2}


class FineTuner:
    """One theta update per :meth:`step`; see the module docstring."""

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        method: str = "implicit",
        batch_size: int = 16,
        lr: float = 1e-4,
        accumulate: int = 1,
        reference: GaussianChain | None = None,
        params=None,
        seed: int = 0,
        truncate_steps: int = 1,
        ppo_clip: float | None = None,
    ):
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        for name, v in (("batch_size", batch_size), ("accumulate", accumulate)):
            if isinstance(v, bool) or not (isinstance(v, int) and v >= 1):
                raise UsageError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(lr, int | float) and lr >= 0):
            raise UsageError(f"lr must be a number >= 0, got {lr!r}")
        if method == "implicit" and accumulate != 1:
            raise UsageError("accumulate applies to the nested methods; implicit uses 1")
        self.sampler, self.objective, self.method = sampler, objective, method
        self.n, self.accumulate, self.seed = batch_size, accumulate, int(seed)
        self.params = resolve_params(method, sampler, params)
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.updates = 0
        self.network_evals = 0
        if method == "implicit":
            self.queue = QueuedImplicitDiffusion(
                sampler,
                objective,
                batch_size=batch_size,
                optimizer=self.optimizer,
                reference=reference,
                params=self.params,
                seed=seed,
            )
            self.estimator = None
        else:
            self.queue = None
            self.estimator = {
                "adjoint": lambda: AdjointEstimator(reference=reference),
                "unrolled": lambda: UnrolledEstimator(reference=reference),
                "truncated": lambda: TruncatedEstimator(truncate_steps, reference=reference),
                "score-function": lambda: ScoreFunctionEstimator(
                    reference=reference, clip=ppo_clip
                ),
            }[method]()
        self.rank, self.world = _process_group()
        self._group = None
        if self.world > 1:  # a group whose backend can reduce tensors on this device
            import torch.distributed as dist

            cpu = self.params[0].device.type == "cpu"
            self._group = dist.new_group(backend="gloo" if cpu else None)
        if self.queue is not None:
            self.queue.seed = self.seed * 7919 + self.rank
            if self.world > 1:
                self.queue.reduce_grads = self._all_reduced

    def step(self) -> dict:
        """One theta update; returns its record (update, reward_mean, value,
        network_evals). Raises :class:`NonFiniteError` before updating anything if the
        reward or the gradient is not finite."""
        K = self.sampler.num_steps
        if self.queue is not None:
            rec = None
            while rec is None:
                rec = self.queue.step()
            self.network_evals = self.queue.network_rows
            reward, value = rec["reward_mean"], rec["value"]
        else:
            self.optimizer.zero_grad(set_to_none=True)
            rewards, value = [], 0.0
            for a in range(self.accumulate):
                loss = self.estimator.loss(
                    self.sampler,
                    self.objective,
                    n=self.n,
                    generator=self._micro_generator(self.rank * self.accumulate + a),
                    params=self.params,
                )
                (loss / self.accumulate).backward()
                rewards.append(self.estimator.last_rewards.mean())
                value += float(loss.detach()) / self.accumulate
                self.network_evals += _EVALS[self.method] * K * self.n
            for p in self.params:
                if p.grad is not None:
                    check_finite(p.grad, "the gradient")
            self._all_reduce()
            self.optimizer.step()
            reward = float(torch.stack(rewards).mean())
        self.updates += 1
        return {
            "update": self.updates,
            "reward_mean": reward,
            "value": value,
            "network_evals": self.network_evals,
        }

    def _micro_generator(self, m: int) -> torch.Generator:
        """The generator of micro-batch m of the coming update (see the module docstring)."""
        seed = (self.seed * 1_000_003 + self.updates) * 65_537 + m
        return torch.Generator(device=self.params[0].device).manual_seed(seed % 2**62)

    def _all_reduced(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        import torch.distributed as dist

        out = []
        for g in grads:
            g = g.clone()
            dist.all_reduce(g, group=self._group)
            out.append(g.div_(self.world))
        return out

    def _all_reduce(self) -> None:
        if self.world == 1:
            return
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        for p, g in zip(self.params, self._all_reduced(grads), strict=True):
            p.grad = g

    # -- state for checkpoints -----------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a resume needs, as a flat dict of tensors (safetensors)."""
        out = {f"param.{i}": p.detach().clone() for i, p in enumerate(self.params)}
        for i, p in enumerate(self.params):
            st = self.optimizer.state.get(p, {})
            for key, v in st.items():
                out[f"adam.{i}.{key}"] = torch.as_tensor(v).clone()
        out["counters"] = torch.tensor([self.updates, self.network_evals], dtype=torch.long)
        if self.queue is not None:
            out.update(self.queue.state_tensors())
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors` (same model, method and settings)."""
        n_params = sum(1 for k in t if k.startswith("param."))
        if n_params != len(self.params):
            raise UsageError(
                f"the checkpoint holds {n_params} parameter tensors, this model {len(self.params)}"
            )
        with torch.no_grad():
            for i, p in enumerate(self.params):
                src = t[f"param.{i}"]
                if src.shape != p.shape:
                    raise UsageError(
                        f"checkpoint parameter {i} has shape {tuple(src.shape)}, the model's "
                        f"is {tuple(p.shape)}: a checkpoint of a different model"
                    )
                p.copy_(src)
        self.optimizer.state.clear()
        for i, p in enumerate(self.params):
            st = {k.split(".", 2)[2]: v.clone() for k, v in t.items() if k.startswith(f"adam.{i}.")}
            if st:
                self.optimizer.state[p] = st
        self.updates, self.network_evals = (int(v) for v in t["counters"])
        if self.queue is not None:
            self.queue.load_state_tensors(t)


def _process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
