"""Samplers: Gaussian Markov chains x_{k+1} = m_theta(x_k, k) + s_k xi_k."""

from sampleopt.samplers.affine import AffineChain
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.diffusion import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DiffusionSampler,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    respaced_timesteps,
)
from sampleopt.samplers.langevin import LangevinSampler
from sampleopt.samplers.potentials import (
    FunctionPotential,
    GaussianMixturePotential,
    Potential,
    QuadraticPotential,
    hex_centres,
)

__all__ = [
    "AffineChain",
    "SAMPLERS",
    "DDIMSampler",
    "DDPMSampler",
    "DiffusionSampler",
    "ProbabilityFlowSampler",
    "ReverseSDESampler",
    "respaced_timesteps",
    "FunctionPotential",
    "GaussianChain",
    "GaussianMixturePotential",
    "LangevinSampler",
    "Potential",
    "QuadraticPotential",
    "hex_centres",
]
