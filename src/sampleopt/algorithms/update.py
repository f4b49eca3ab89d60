"""The one parameter update that every algorithm makes (docs/methods.md section 4).

:class:`Update` owns what happens between "a gradient estimate exists" and "theta has
moved": the step size (a :class:`~sampleopt.algorithms.step_size.StepSize` schedule over
the update count), the rule (plain SGD applied in place, Adam, or any torch optimiser
given by the caller), the average over processes (an all-reduce when a
``torch.distributed`` group is initialised, as DistributedDataParallel does; the
estimators take explicit vector-Jacobian products that DDP's hooks would not see), the
finiteness check that refuses a NaN or inf gradient before anything changes, snapshots
for rolling back, and its state as tensors for checkpoints.

Choose ``optimizer="sgd"`` (the default of the Langevin algorithms, whose iterations
are tiny, so a generic optimiser's overhead would dominate) or ``"adam"`` (the default
for fine-tuning networks), or pass a ``torch.optim.Optimizer`` built over the same
parameters.
"""

from __future__ import annotations

import torch

from sampleopt.algorithms.step_size import StepSize
from sampleopt.checks import check_finite
from sampleopt.errors import UsageError

OPTIMIZERS = ("sgd", "adam")


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Update:
    """theta <- rule(theta, gradient, lr_k) over ``params``; ``lr`` a number or a
    :class:`StepSize`; ``optimizer`` "sgd", "adam" or a torch optimiser."""

    def __init__(self, params: list[torch.Tensor], lr, optimizer="sgd"):
        self.params = list(params)
        self.step_size = lr if isinstance(lr, StepSize) else StepSize(lr)
        self.count = 0  # updates made
        self._constant = self.step_size.eta if self.step_size.schedule == "constant" else None
        if isinstance(optimizer, torch.optim.Optimizer):
            owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if not all(id(p) in owned for p in self.params):
                raise UsageError("the optimizer does not hold every parameter being trained")
            self.optimizer = optimizer
        elif optimizer == "sgd" or optimizer is None:
            self.optimizer = None
        elif optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=self.step_size(0))
        else:
            raise UsageError(
                f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)} or pass "
                "a torch.optim.Optimizer"
            )
        self.rank, self.world = process_group()
        self._group = None
        if self.world > 1:  # a group whose backend can reduce tensors on this device
            import torch.distributed as dist

            cpu = self.params[0].device.type == "cpu"
            self._group = dist.new_group(backend="gloo" if cpu else None)

    @property
    def lr(self) -> float:
        """The step size of the coming update."""
        return self._constant if self._constant is not None else self.step_size(self.count)

    def apply(self, grads: list[torch.Tensor] | None = None, *, check: bool = True) -> None:
        """One update with ``grads`` (aligned with the parameters; default: their
        ``.grad``, None counting as zero). With ``check`` a NaN or inf gradient raises
        :class:`~sampleopt.errors.NonFiniteError` before anything changes."""
        if grads is None:
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        if check:
            for g in grads:
                check_finite(g, "the gradient")
        if self.world > 1:
            grads = self.all_reduced(grads)
        lr = self.lr
        if self.optimizer is None:
            if torch.is_grad_enabled():
                with torch.no_grad():
                    self._sgd(grads, lr)
            else:  # the Langevin loops run here: no context switch per iteration
                self._sgd(grads, lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
        self.count += 1

    def _sgd(self, grads, lr) -> None:
        for p, g in zip(self.params, grads, strict=True):
            p.sub_(g, alpha=lr)

    def all_reduced(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The average of ``grads`` over the processes of the group."""
        import torch.distributed as dist

        out = []
        for g in grads:
            g = g.clone()
            dist.all_reduce(g, group=self._group)
            out.append(g.div_(self.world))
        return out

    # -- rollback and checkpoints ---------------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of everything :meth:`restore` needs to undo later updates."""
        return {k: v.clone() for k, v in self.state_tensors().items()}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.load_state_tensors(snapshot)

    def state_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters, the optimiser's state and the update count, as flat tensors."""
        out = {f"{prefix}param.{i}": p.detach() for i, p in enumerate(self.params)}
        if self.optimizer is not None:
            for i, p in enumerate(self.params):
                for key, v in self.optimizer.state.get(p, {}).items():
                    out[f"{prefix}adam.{i}.{key}"] = torch.as_tensor(v)
        out[f"{prefix}update_count"] = torch.tensor(self.count, dtype=torch.long)
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Restore :meth:`state_tensors` (same parameters and optimiser)."""
        n = sum(1 for k in t if k.startswith(f"{prefix}param."))
        if n != len(self.params):
            raise UsageError(
                f"the checkpoint holds {n} parameter tensors, this model {len(self.params)}"
            )
        with torch.no_grad():
            for i, p in enumerate(self.params):
                src = t[f"{prefix}param.{i}"]
                if src.shape != p.shape:
                    raise UsageError(
                        f"checkpoint parameter {i} has shape {tuple(src.shape)}, the model's "
                        f"is {tuple(p.shape)}: a checkpoint of a different model"
                    )
                p.copy_(src)
        if self.optimizer is not None:
            self.optimizer.state.clear()
            for i, p in enumerate(self.params):
                head = f"{prefix}adam.{i}."
                st = {k[len(head) :]: v.clone() for k, v in t.items() if k.startswith(head)}
                if st:
                    self.optimizer.state[p] = st
        self.count = int(t[f"{prefix}update_count"])
