"""Named, documented experiments the CLI runs (``sampleopt list``)."""

from __future__ import annotations

from sampleopt.errors import UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.bilevel_gaussian import BILEVEL_GAUSSIAN
from sampleopt.experiments.bilevel_mnist import BILEVEL_MNIST
from sampleopt.experiments.bilevel_schedule import BILEVEL_SCHEDULE
from sampleopt.experiments.guidance_mnist import GUIDANCE_MNIST
from sampleopt.experiments.guidance_sphere import GUIDANCE_SPHERE
from sampleopt.experiments.guidance_subspace import GUIDANCE_SUBSPACE
from sampleopt.experiments.langevin_hex import LANGEVIN_HEX
from sampleopt.experiments.mnist_finetune import MNIST_BRIGHTNESS, MNIST_DIGIT
from sampleopt.experiments.soc_bimodal import SOC_BIMODAL
from sampleopt.experiments.soc_linear import SOC_LINEAR

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (LANGEVIN_HEX, MNIST_BRIGHTNESS, MNIST_DIGIT)
}
EXPERIMENTS[SOC_BIMODAL.name] = SOC_BIMODAL
EXPERIMENTS[SOC_LINEAR.name] = SOC_LINEAR
EXPERIMENTS[BILEVEL_GAUSSIAN.name] = BILEVEL_GAUSSIAN
EXPERIMENTS[BILEVEL_MNIST.name] = BILEVEL_MNIST
EXPERIMENTS[GUIDANCE_MNIST.name] = GUIDANCE_MNIST
EXPERIMENTS[GUIDANCE_SPHERE.name] = GUIDANCE_SPHERE
EXPERIMENTS[BILEVEL_SCHEDULE.name] = BILEVEL_SCHEDULE
EXPERIMENTS[GUIDANCE_SUBSPACE.name] = GUIDANCE_SUBSPACE


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UsageError(
            f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))} "
            "(see `sampleopt list`)"
        )
    return EXPERIMENTS[name]


__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]
