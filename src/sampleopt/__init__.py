"""sampleopt: optimisation through stochastic sampling.

Three kinds of object, composed by the algorithms:

* samplers (:mod:`sampleopt.samplers`): Gaussian Markov chains whose parameters
  are a torch module's;
* objectives (:mod:`sampleopt.objectives`): a reward r(x) -> (n,) and a divergence
  object (PathKL, GibbsKL) that holds its reference;
* estimators (:mod:`sampleopt.estimators`): surrogate losses whose ``.backward()``
  leaves a gradient estimate in ``.grad``.
"""

from sampleopt.algorithms import (
    FineTuner,
    GuidedOptimization,
    History,
    ImplicitDiffusion,
    NestedLoop,
    QueuedImplicitDiffusion,
    StepSize,
)
from sampleopt.errors import NonFiniteError, SampleoptError, UsageError
from sampleopt.estimators import (
    ESTIMATORS,
    AdjointEstimator,
    CovarianceEstimator,
    Estimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
    ZerothOrderEstimator,
    make_estimator,
)
from sampleopt.guidance import (
    AutogradGradient,
    GuidedDenoiser,
    LookAheadGuidance,
    NaiveGuidance,
    ZerothOrderGradient,
    guidance_targets,
)
from sampleopt.models.pretrained import available_base_models, load_base_model
from sampleopt.objectives import (
    Brightness,
    DigitProbability,
    GibbsKL,
    HexReward,
    Objective,
    PathKL,
    estimate_path_kl,
)
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
    "ESTIMATORS",
    "AdjointEstimator",
    "Brightness",
    "DigitProbability",
    "Estimator",
    "FineTuner",
    "GibbsKL",
    "GuidedDenoiser",
    "GuidedOptimization",
    "LookAheadGuidance",
    "NaiveGuidance",
    "AutogradGradient",
    "ZerothOrderGradient",
    "guidance_targets",
    "PathKL",
    "QueuedImplicitDiffusion",
    "estimate_path_kl",
    "make_estimator",
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
