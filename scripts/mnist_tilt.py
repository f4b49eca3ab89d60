"""What the mnist-brightness objective's optimum scores on the classifier FID.

The minimiser of -E[r(x_K)] + lam * KL(P || P_base) over all path laws is the base law
tilted by the reward, p*(x) ∝ p_base(x) exp(r(x) / lam) (docs/methods.md section 1),
whose path KL is the terminal KL. This script draws a pool of base samples (the
experiment's sampler: reverse SDE, K = 20) and reweights it by exp(r / lam):
self-normalised importance weights give the optimum's mean reward, its KL to the base
(sum w log(N w)), and its classifier FID two ways:

* ``fid_weighted``: the Frechet distance between the weighted Gaussian of the pool's
  features and the training images' (large n; the ratio to the unweighted pool);
* ``fid_256``: 256 draws from the weighted pool (with replacement, as the experiment
  evaluates 256 samples; repeated draws raise it somewhat when the effective sample
  size is small), the ratio to the first 256 base samples.

For contrast, one change that is not a reweighting: the base samples blurred with a
3x3 box filter and doubled in intensity (thicker, softer strokes).

    python scripts/mnist_tilt.py            # 2.5 min here; writes scripts/results/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sampleopt.data import mnist
from sampleopt.metrics.classifier import classifier_features, classifier_fid
from sampleopt.metrics.distances import frechet_distance, frechet_distance_from_features
from sampleopt.models.pretrained import load_base_model
from sampleopt.objectives import Brightness
from sampleopt.samplers import ReverseSDESampler


def weighted_fid(f: torch.Tensor, w: torch.Tensor, ref: torch.Tensor) -> float:
    f, w, ref = f.double(), w.double(), ref.double()
    mu = w @ f
    c = f - mu
    cov = (c * w[:, None]).T @ c / (1 - (w**2).sum())  # reliability-weights unbiased
    return frechet_distance(mu.numpy(), cov.numpy(), ref.mean(0).numpy(), ref.T.cov().numpy())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=4096, help="base samples drawn")
    ap.add_argument("--lams", default="0.1,0.05,0.03,0.02,0.015,0.01")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mnist_tilt.json"))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    base = load_base_model("mnist")
    sampler = ReverseSDESampler(base.denoiser, base.schedule, a.steps, data_shape=base.data_shape)
    gen = torch.Generator().manual_seed(a.seed)
    with torch.no_grad():
        x = torch.cat(
            [sampler.sample(min(128, a.pool - i), generator=gen) for i in range(0, a.pool, 128)]
        )
    ref = mnist("train")[0][:1000]
    reward = Brightness()(x)
    feats, ref_feats = classifier_features(x), classifier_features(ref)
    live = (feats != 0).any(0) | (ref_feats != 0).any(0)
    feats, ref_feats = feats[:, live], ref_feats[:, live]
    uniform = torch.full((len(x),), 1 / len(x))
    base_w, base_256 = (
        weighted_fid(feats, uniform, ref_feats),
        frechet_distance_from_features(feats[:256], ref_feats),
    )
    r0 = float(reward.mean())
    rows = [
        dict(
            law="base",
            lam=None,
            reward=r0,
            change=0.0,
            kl=0.0,
            ess=len(x),
            fid_weighted=base_w,
            ratio_weighted=1.0,
            fid_256=base_256,
            ratio_256=1.0,
        )
    ]
    for lam in (float(v) for v in a.lams.split(",")):
        w = torch.softmax(reward.double() / lam, 0)
        idx = torch.multinomial(
            w, 256, replacement=True, generator=torch.Generator().manual_seed(1)
        )
        fw, f256 = (
            weighted_fid(feats, w.float(), ref_feats),
            frechet_distance_from_features(feats[idx], ref_feats),
        )
        rm = float(w @ reward.double())
        rows.append(
            dict(
                law="tilted optimum",
                lam=lam,
                reward=rm,
                change=rm / r0 - 1,
                kl=float((w * torch.log(w * len(w))).sum()),
                ess=float(1 / (w**2).sum()),
                fid_weighted=fw,
                ratio_weighted=fw / base_w,
                fid_256=f256,
                ratio_256=f256 / base_256,
            )
        )
    u = ((x[:256] + 1) / 2).clamp(0, 1)
    blur = (F.conv2d(u, torch.ones(1, 1, 3, 3) / 9, padding=1) * 2).clamp(0, 1) * 2 - 1
    rb, fb = float(Brightness()(blur).mean()), classifier_fid(blur, ref)
    rows.append(
        dict(
            law="base, box blur x2",
            lam=None,
            reward=rb,
            change=rb / float(reward[:256].mean()) - 1,
            kl=None,
            ess=None,
            fid_weighted=None,
            ratio_weighted=None,
            fid_256=fb,
            ratio_256=fb / base_256,
        )
    )
    print(
        f"pool {len(x)} base samples (reverse SDE, K = {a.steps}), {time.perf_counter() - t0:.0f} s"
    )
    print("| law | lam | brightness | change | KL | ESS | FID (weighted) | FID (256) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:

        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        print(
            f"| {r['law']} | {f(r['lam'], 'g')} | {r['reward']:.3f} | {100 * r['change']:+.0f}% | "
            f"{f(r['kl'], '.2f')} | {f(r['ess'], '.0f')} | {f(r['fid_weighted'], '.0f')} "
            f"({f(r['ratio_weighted'], '.2f')}x) | {r['fid_256']:.0f} ({r['ratio_256']:.2f}x) |"
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"pool": len(x), "steps": a.steps, "seed": a.seed, "rows": rows}, indent=1)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
