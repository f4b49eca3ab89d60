"""sampleopt: optimisation through stochastic sampling.

Three kinds of object, composed by the algorithms:

* samplers (:mod:`sampleopt.samplers`): Gaussian Markov chains whose parameters
  are a torch module's;
* objectives (:mod:`sampleopt.objectives`): a reward r(x) -> (n,) and divergences
  to a reference;
* estimators (:mod:`sampleopt.estimators`): surrogate losses whose ``.backward()``
  leaves a gradient estimate in ``.grad``.
"""

from sampleopt.algorithms import History, ImplicitDiffusion, NestedLoop, StepSize
from sampleopt.errors import NonFiniteError, SampleoptError, UsageError
from sampleopt.estimators import (
    AdjointEstimator,
    CovarianceEstimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
    ZerothOrderEstimator,
)
from sampleopt.models.pretrained import available_base_models, load_base_model
from sampleopt.objectives import HexReward, Objective
from sampleopt.samplers import (
    AffineChain,
    DDIMSampler,
    DDPMSampler,
    FunctionPotential,
    GaussianChain,
    GaussianMixturePotential,
    LangevinSampler,
    Potential,
    ProbabilityFlowSampler,
    QuadraticPotential,
    ReverseSDESampler,
    hex_centres,
)

__version__ = "0.1.0"

__all__ = [
    "AdjointEstimator",
    "AffineChain",
    "ScoreFunctionEstimator",
    "TruncatedEstimator",
    "ZerothOrderEstimator",
    "CovarianceEstimator",
    "DDIMSampler",
    "DDPMSampler",
    "ProbabilityFlowSampler",
    "ReverseSDESampler",
    "FunctionPotential",
    "GaussianChain",
    "GaussianMixturePotential",
    "HexReward",
    "History",
    "ImplicitDiffusion",
    "LangevinSampler",
    "NestedLoop",
    "NonFiniteError",
    "Objective",
    "Potential",
    "QuadraticPotential",
    "SampleoptError",
    "StepSize",
    "UnrolledEstimator",
    "UsageError",
    "available_base_models",
    "hex_centres",
    "load_base_model",
]
