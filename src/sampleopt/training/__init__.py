"""Training base models: denoising score matching with EMA and exact resume."""

from sampleopt.training.dsm import PRESETS, DSMTrainer, TrainConfig, model_from_config

__all__ = ["PRESETS", "DSMTrainer", "TrainConfig", "model_from_config"]
