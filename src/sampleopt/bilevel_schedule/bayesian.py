"""Bayesian optimisation of the four schedule parameters (optuna's TPE sampler).

Each trial is a whole training under a fixed learnable-cosine schedule, scored by the
upper objective on validation data (lower is better). Trial 0 is the standard cosine
schedule (enqueued, as a practitioner would start from the default); trial i >= 1 is
TPE's suggestion in :data:`~sampleopt.bilevel_schedule.domain.BOX` given the finished
trials. The study is rebuilt from those trials with a sampler seeded by (seed, i), so a
suggestion depends only on the seed and the history: an interrupted search resumes
exactly. TPE suggests uniformly at random in the box until ``startup`` trials (the
cosine included) have finished.
"""

from __future__ import annotations

from sampleopt.bilevel_schedule.domain import BOX, COSINE, PARAMETERS


def suggest(history: list[tuple[dict, float]], seed: int, startup: int) -> dict[str, float]:
    """The parameters of trial ``len(history)``; ``history``: (parameters, score) of the
    finished trials, in order."""
    if not history:
        return dict(COSINE)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = {n: optuna.distributions.FloatDistribution(*BOX[n]) for n in PARAMETERS}
    sampler = optuna.samplers.TPESampler(
        seed=(seed * 1009 + len(history)) % 2**32, n_startup_trials=startup
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for params, value in history:
        clipped = {n: min(max(params[n], BOX[n][0]), BOX[n][1]) for n in PARAMETERS}
        study.add_trial(optuna.trial.create_trial(params=clipped, distributions=dists, value=value))
    trial = study.ask(dists)
    return {n: float(trial.params[n]) for n in PARAMETERS}
