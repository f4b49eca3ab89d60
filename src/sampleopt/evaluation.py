"""Sample quality of the shipped base models (`sampleopt evaluate NAME`).

Low-dimensional models (hex, bimodal-1d, subspace) are compared with held-out data
by sliced Wasserstein distance and unbiased MMD^2, next to the same distances
between two independent data samples of the same size (the noise floor), and by
the data's exact log-density averaged over model samples (how much mass lands
where the data is; compare with its average over data). For the subspace model
the off-support ratio |x_perp| / |x_par| is reported too.

Image models (mnist) are compared by classifier FID, the Frechet distance between
penultimate features of the project's own MNIST classifier
(:mod:`sampleopt.metrics.classifier`): samples against the training images, next
to held-out real images against the training images; and by the histogram of
predicted classes. Classifier FID is not comparable with Inception FID.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sampleopt.data import get_dataset
from sampleopt.data.subspace import SubspaceGaussian
from sampleopt.data.toy import bimodal_1d_log_prob, hex_mixture_log_prob
from sampleopt.metrics import mmd_rbf, sliced_wasserstein
from sampleopt.models.pretrained import load_base_model
from sampleopt.plots import image_grid, line_plot, sample_plot

LOG_DENSITY = {"hex": hex_mixture_log_prob, "bimodal-1d": bimodal_1d_log_prob}


@torch.no_grad()
def evaluate_base_model(
    name: str,
    out: Path | None = None,
    *,
    n: int = 2000,
    sampler: str = "ddpm",
    num_steps: int = 100,
    seed: int = 0,
) -> dict:
    """Draw n samples from base model ``name`` and measure them (see module doc)."""
    base = load_base_model(name)
    spec = get_dataset(base.meta["dataset"])
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    x = base.sampler(sampler, num_steps).sample(n, generator=gen)
    seconds = time.perf_counter() - t0
    result: dict = {
        "model": name,
        "dataset": spec.name,
        "sampler": sampler,
        "num_steps": num_steps,
        "n": n,
        "seed": seed,
        "sampling_seconds": round(seconds, 3),
        "command": f"sampleopt evaluate {name} --n {n} --sampler {sampler} "
        f"--steps {num_steps} --seed {seed}",
    }
    if spec.labelled:
        result.update(_image_metrics(x, spec, out))
    else:
        result.update(_vector_metrics(x, spec, name, out))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _vector_metrics(x, spec, name, out) -> dict:
    n = x.shape[0]
    test = spec.load("test", n=n)
    other = spec.load("test", n=n, generator=torch.Generator().manual_seed(123))
    res = {
        "sliced_wasserstein": sliced_wasserstein(x, test),
        "sliced_wasserstein_data_vs_data": sliced_wasserstein(other, test),
        "mmd2": mmd_rbf(x, test),
        "mmd2_data_vs_data": mmd_rbf(other, test),
    }
    if name in LOG_DENSITY:
        logp = LOG_DENSITY[name]
        res["mean_data_log_density_of_samples"] = float(logp(x.double()).mean())
        res["mean_data_log_density_of_data"] = float(logp(test.double()).mean())
    if spec.name == "subspace":
        sub = SubspaceGaussian()
        res["off_support_ratio_mean"] = float(sub.off_support_ratio(x).mean())
        res["latent_log_density_of_samples"] = float(sub.log_prob_latent(x).mean())
        res["latent_log_density_of_data"] = float(sub.log_prob_latent(test).mean())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        sample_plot(out / "samples.png", x, test, title=f"{name}: samples vs held-out data")
    return res


def _image_metrics(x, spec, out) -> dict:
    from sampleopt.metrics.classifier import class_histogram, classifier_fid, load_digit_classifier

    clf = load_digit_classifier()
    train, _ = spec.load("train")
    test, _ = spec.load("test")
    counts, confidence = class_histogram(x, clf)
    counts = [int(c) for c in counts]
    res = {
        "classifier_fid_samples_vs_train": classifier_fid(x, train, clf),
        "classifier_fid_heldout_vs_train": classifier_fid(test[: x.shape[0]], train, clf),
        "n_train_images": int(train.shape[0]),
        "n_heldout_images": int(min(test.shape[0], x.shape[0])),
        "class_histogram": counts,
        "mean_max_probability": float(confidence),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        image_grid(out / "samples.png", x[:64], title=f"{spec.name}: 64 samples")
        line_plot(
            out / "class_histogram.png",
            {"samples": (list(range(10)), counts)},
            xlabel="predicted digit",
            ylabel="count",
            title="predicted classes of the samples",
            markers=True,
        )
    return res
