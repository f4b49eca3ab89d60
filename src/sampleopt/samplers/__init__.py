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
from sampleopt.samplers.flow import MemorylessFlowSDE
from sampleopt.samplers.initial import Gaussian, GaussianMixture, InitialLaw
from sampleopt.samplers.langevin import LangevinSampler
from sampleopt.samplers.potentials import (
    FunctionPotential,
    GaussianMixturePotential,
    Potential,
    QuadraticPotential,
    hex_centres,
)
from sampleopt.samplers.sde import ControlledChain, SDEChain

__all__ = [
    "AffineChain",
    "ControlledChain",
    "Gaussian",
    "GaussianMixture",
    "InitialLaw",
    "SDEChain",
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
    "MemorylessFlowSDE",
    "Potential",
    "QuadraticPotential",
    "hex_centres",
]
