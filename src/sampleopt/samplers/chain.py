"""The one abstraction every sampler shares: a Gaussian Markov chain.

A sampler with parameters theta draws ``x_0 ~ p_0`` and then applies

    x_{k+1} = m_theta(x_k, k) + s_k * xi_k,    xi_k ~ N(0, I),

for ``k = 0 .. K-1`` (docs/methods.md section 1). Langevin, DDPM, DDIM, Euler-Maruyama
and the probability-flow ODE (``s_k = 0``) all have this form. A sampler knows
its number of steps, how to draw ``x_0``, its mean function and its noise scale;
it knows nothing of rewards or estimators. Its parameters are those of the
``torch.nn.Module`` it is, so any torch optimiser can update them.
"""

from __future__ import annotations

import torch
from torch import nn


class GaussianChain(nn.Module):
    """Base class of samplers; subclasses define :meth:`mean`, :meth:`noise_scale`
    and :meth:`sample_x0` and set :attr:`num_steps`."""

    num_steps: int
    #: whether x_K is independent of x_0 (the optimum of -E[r] + lam * path KL is then the
    #: tilted law p_base exp(r / lam); docs/soc.md section 1). False when unknown.
    memoryless: bool = False

    def linear_coefficient(self, k: int):
        """c_k with m(x, k) = c_k x + (the rest): the step's exactly-integrated linear
        part (a number, or a (d, d) matrix on flat states); 1 when the chain has none.
        The time-reversed BSDE inverts it when it runs a path backwards."""
        return 1.0

    def mean(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """m_theta(x_k, k): the mean of x_{k+1} given x_k."""
        raise NotImplementedError

    def noise_scale(self, k: int) -> float | torch.Tensor:
        """s_k: the standard deviation of the noise added at step k (a tensor only when
        it depends on trainable parameters, e.g. a learnable noise schedule)."""
        raise NotImplementedError

    def sample_x0(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n starting points x_0 ~ p_0."""
        raise NotImplementedError

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of one state x_k, without the batch axis. This default draws one x_0
        from a private generator; samplers that know their shape override it."""
        device = next((t.device for t in (*self.parameters(), *self.buffers())), None)
        generator = torch.Generator(device=device).manual_seed(0)
        return tuple(self.sample_x0(1, generator).shape[1:])

    def mean_batched(self, xs: list[torch.Tensor], ks: list[int]) -> list[torch.Tensor]:
        """m_theta(x_i, k_i) for batches at different steps (finite-time Implicit
        Diffusion advances a queue of them at once). This default calls :meth:`mean`
        per batch; samplers over a network override it with one batched call."""
        return [self.mean(x, k) for x, k in zip(xs, ks, strict=True)]

    def step(self, x: torch.Tensor, k: int, noise: torch.Tensor) -> torch.Tensor:
        """One transition with the given standard normal ``noise`` (common random numbers)."""
        return self.add_noise(self.mean(x, k), k, noise)

    def add_noise(self, m: torch.Tensor, k: int, noise: torch.Tensor) -> torch.Tensor:
        """m + s_k * noise: the second half of :meth:`step`."""
        s = self.noise_scale(k)
        if isinstance(s, torch.Tensor):  # a noise scale that carries a gradient
            return m + s * noise
        return m if s == 0 else torch.add(m, noise, alpha=s)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        x0: torch.Tensor | None = None,
        steps: int | None = None,
        return_path: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Run the chain for ``steps`` (default :attr:`num_steps`) steps from x_0.

        Gradients flow through the path if the caller enables them (unrolled
        estimators); wrap the call in ``torch.no_grad()`` to sample cheaply.
        Returns x_K, or the list [x_0, ..., x_K] if ``return_path``.
        """
        x = self.sample_x0(n, generator) if x0 is None else x0
        steps = self.num_steps if steps is None else steps
        path = [x]
        for k in range(steps):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = self.step(x, k, noise)
            if return_path:
                path.append(x)
        return path if return_path else x
