"""Stochastic-optimal-control fine-tuning (docs/soc.md): the pieces that adjoint
matching and the time-reversed BSDE share, the score fit of a controlled process and
the closed-form benchmarks (the linear co-state problem, the bimodal OU tilt)."""

from sampleopt.soc.networks import TimeField

__all__ = ["TimeField"]
