"""The exact oracle for linear-Gaussian chains (docs/methods.md section 2).

A chain whose mean is affine in x, m_theta(x, k) = A_k x + b_k (A_k, b_k depending on
theta), started from x_0 ~ N(m_0, S_0), stays Gaussian:

    m_{k+1} = A_k m_k + b_k,    S_{k+1} = A_k S_k A_k^T + s_k^2 I,

so for a quadratic reward r(x) = a^T x + x^T Q x,
E[r(x_K)] = a^T m_K + m_K^T Q m_K + tr(Q S_K), and the path KL to a reference chain
with the same noise (docs/methods.md section 1) is, with D_k = A_k - A_k^ref and
d_k = b_k - b_k^ref,

    sum_k ( |D_k m_k + d_k|^2 + tr(D_k S_k D_k^T) ) / (2 s_k^2).

A_k and b_k are read off the chain itself (b_k = m(0), A_k^T = m(I) - b_k), so the
whole computation is a deterministic function of theta and autograd gives the exact
gradient: the ground truth the estimators are tested against. The chain must be
affine (checked at a random point) with data of one flat dimension.
"""

from __future__ import annotations

import torch

from sampleopt.errors import UsageError
from sampleopt.objectives.divergences import is_deterministic
from sampleopt.samplers.chain import GaussianChain


def _affine_step(chain: GaussianChain, k: int, d: int, dtype, device, check: bool):
    eye = torch.eye(d, dtype=dtype, device=device)
    zero = torch.zeros(1, d, dtype=dtype, device=device)
    b = chain.mean(zero, k)[0]
    A = (chain.mean(eye, k) - b).T
    if check:
        x = torch.randn(3, d, dtype=dtype, generator=torch.Generator().manual_seed(k)).to(device)
        with torch.no_grad():
            err = (chain.mean(x, k) - (x @ A.T + b)).abs().max()
            scale = 1 + (x @ A.T + b).abs().max()
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        if err > tol * scale:
            raise UsageError(
                f"the exact oracle needs a chain whose mean is affine in x; step {k} is not "
                f"(deviation {float(err):.3g})"
            )
    s = chain.noise_scale(k)
    return A, b, s


def _device(chain: GaussianChain):
    t = next(iter(chain.parameters()), None)
    if t is None:
        t = next(iter(chain.buffers()), None)
    return None if t is None else t.device


def exact_moments(
    chain: GaussianChain,
    dim: int,
    *,
    mean0=None,
    cov0=None,
    dtype=torch.float64,
    check: bool = True,
):
    """(m_K, S_K) of an affine chain from N(mean0, cov0) (default N(0, I)),
    differentiable in the chain's parameters."""
    kw = {"dtype": dtype, "device": _device(chain)}
    m = torch.zeros(dim, **kw) if mean0 is None else torch.as_tensor(mean0, **kw)
    S = torch.eye(dim, **kw) if cov0 is None else torch.as_tensor(cov0, **kw)
    eye = torch.eye(dim, **kw)
    for k in range(chain.num_steps):
        A, b, s = _affine_step(chain, k, dim, dtype, kw["device"], check)
        m = A @ m + b
        S = A @ S @ A.T + (s**2) * eye
    return m, S


def exact_objective(
    chain: GaussianChain,
    dim: int,
    *,
    a=None,
    Q=None,
    lam: float = 0.0,
    reference: GaussianChain | None = None,
    mean0=None,
    cov0=None,
    dtype=torch.float64,
) -> torch.Tensor:
    """Exact l(theta) = -E[a^T x_K + x_K^T Q x_K] + lam * path KL(chain || reference)."""
    kw = {"dtype": dtype, "device": _device(chain)}
    a = torch.zeros(dim, **kw) if a is None else torch.as_tensor(a, **kw)
    Q = torch.zeros(dim, dim, **kw) if Q is None else torch.as_tensor(Q, **kw)
    if lam > 0 and reference is None:
        raise UsageError("lam > 0 needs the reference chain")
    m = torch.zeros(dim, **kw) if mean0 is None else torch.as_tensor(mean0, **kw)
    S = torch.eye(dim, **kw) if cov0 is None else torch.as_tensor(cov0, **kw)
    kl = torch.zeros((), **kw)
    eye = torch.eye(dim, **kw)
    for k in range(chain.num_steps):
        A, b, s = _affine_step(chain, k, dim, dtype, kw["device"], True)
        if lam > 0:
            if is_deterministic(s):
                raise UsageError(f"the path KL is infinite over the deterministic step {k}")
            Ar, br, _ = _affine_step(reference, k, dim, dtype, kw["device"], True)
            D, dvec = A - Ar, b - br
            kl = kl + ((D @ m + dvec).pow(2).sum() + torch.trace(D @ S @ D.T)) / (2 * s**2)
        m = A @ m + b
        S = A @ S @ A.T + (s**2) * eye
    reward = a @ m + m @ Q @ m + torch.trace(Q @ S)
    return -reward + lam * kl
