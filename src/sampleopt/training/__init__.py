"""Training base models (denoising score matching with EMA and exact resume) and LoRA
adapters. Reward fine-tuning is an algorithm: :mod:`sampleopt.algorithms`."""

from sampleopt.training.dsm import PRESETS, DSMTrainer, TrainConfig

__all__ = ["PRESETS", "DSMTrainer", "TrainConfig"]
