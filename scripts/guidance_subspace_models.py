"""Off-support ratio of naive and look-ahead guidance on a learned subspace model: the
shipped `subspace` model (eps prediction) or a training run folder (e.g. an x0-predicting
model), docs/guidance-subspace.md "Why naive guidance leaves the subspace".

    sampleopt train subspace --seed 0 --set steps=8000 --set prediction=x0 --out /tmp/x0
    python scripts/guidance_subspace_models.py shipped /tmp/x0

For each model: the unguided DDPM-50 floor, then 60 rounds of Algorithm 1 on f1 (the
experiment's theta, naive delta 0.9, look-ahead 0.2, sigma_y 0.1, batch 32, 2 seeds):
the mean off-support ratio of the last round's samples and the gap to f1* = 10.
"""

from __future__ import annotations

import sys

import torch

import sampleopt as so
from sampleopt.diffusion.schedules import schedule_from_config
from sampleopt.experiments.guidance_subspace import GuidanceSubspaceConfig, objective, problem
from sampleopt.models.registry import model_from_config
from sampleopt.rundir import load_checkpoint


def load(where: str):
    if where == "shipped":
        base = so.load_base_model("subspace")
        return base.denoiser, base.schedule
    tensors, meta = load_checkpoint(where)
    net = model_from_config(meta["model_config"])
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    return net, schedule_from_config(meta["schedule"])


def main(folders: list[str]) -> None:
    prob = problem(GuidanceSubspaceConfig())
    f, data = objective("f1", prob, torch.float32), prob["data"]
    for where in folders:
        net, schedule = load(where)
        net.eval().requires_grad_(False)
        with torch.no_grad():
            x = so.DDPMSampler(net, schedule, 50, data_shape=(64,)).sample(
                256, generator=torch.Generator().manual_seed(0)
            )
        print(f"{where} ({net.prediction} prediction): unguided ratio "
              f"{data.off_support_ratio(x.double()).mean():.4f}")  # fmt: skip
        for cls, delta in ((so.NaiveGuidance, 0.9), (so.LookAheadGuidance, 0.2)):
            ratios, gaps = [], []
            for seed in range(2):
                guided = so.GuidedDenoiser(net, schedule, cls(sigma_y=0.1))
                sampler = so.DDPMSampler(guided, schedule, 50, data_shape=(64,))
                alg = so.GuidedOptimization(sampler, f, delta=delta, batch_size=32, seed=seed)
                alg.run(60)
                ratios.append(float(data.off_support_ratio(alg.z.double()).mean()))
                gaps.append(10.0 - float(alg.values.mean()))
            print(f"  {cls.__name__}: ratio {sum(ratios) / 2:.4f}, gap {sum(gaps) / 2:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["shipped"])
