"""The shipped base models: each loads in one call, is at most 10 MB, records the
command that made it, and samples close to its data."""

from __future__ import annotations

import json

import pytest
import torch

import sampleopt as so
from sampleopt.data import get_dataset
from sampleopt.errors import UsageError
from sampleopt.metrics import sliced_wasserstein
from sampleopt.models.pretrained import PRETRAINED_DIR

NAMES = so.available_base_models()


def test_the_low_dimensional_base_models_ship():
    assert {"hex", "bimodal-1d", "subspace"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_base_model_loads_in_one_call_and_is_small(name):
    base = so.load_base_model(name)
    meta = json.loads((PRETRAINED_DIR / f"{name}.json").read_text())
    assert (PRETRAINED_DIR / f"{name}.safetensors").stat().st_size <= 10 * 2**20
    assert meta["command"].startswith("sampleopt train ") and "--seed" in meta["command"]
    assert tuple(meta["data_shape"]) == base.data_shape
    x = base.sampler("ddim", 5).sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, *base.data_shape) and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("name", ["hex", "bimodal-1d", "subspace"])
def test_low_dimensional_samples_are_as_close_to_data_as_data_is(name):
    """Sliced Wasserstein of 2000 samples (DDPM, 100 steps) to held-out data is within
    the distance between two independent data samples of that size (times 1.5)."""
    base = so.load_base_model(name)
    spec = get_dataset(base.meta["dataset"])
    with torch.no_grad():
        x = base.sampler("ddpm", 100).sample(2000, generator=torch.Generator().manual_seed(0))
    test = spec.load("test", n=2000)
    floor = sliced_wasserstein(
        spec.load("test", n=2000, generator=torch.Generator().manual_seed(5)), test
    )
    assert sliced_wasserstein(x, test) < 1.5 * floor


def test_subspace_samples_stay_near_the_subspace():
    """Off-support ratio |x_perp| / |x_par| of samples is far below that of an
    isotropic Gaussian of the same total variance (sqrt(48/16) ~ 1.7)."""
    from sampleopt.data.subspace import SubspaceGaussian

    base = so.load_base_model("subspace")
    with torch.no_grad():
        x = base.sampler("ddpm", 100).sample(500, generator=torch.Generator().manual_seed(0))
    sub = SubspaceGaussian()
    iso = torch.randn(500, 64, generator=torch.Generator().manual_seed(1)) * 0.5
    assert float(sub.off_support_ratio(x).mean()) < 0.1 * float(sub.off_support_ratio(iso).mean())


def test_unknown_base_model():
    with pytest.raises(UsageError, match="no base model 'cifar'"):
        so.load_base_model("cifar")
    with pytest.raises(UsageError, match="unknown sampler 'euler'"):
        so.load_base_model("hex").sampler("euler")


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # noise lights features digits never do
def test_mnist_base_model_draws_digits():
    """200 DDIM samples (20 steps): every digit class appears, the classifier is
    confident, and their classifier FID to the training images is a small fraction of
    that of clipped Gaussian noise (the shipped model's full evaluation is in README)."""
    from sampleopt.data import get_dataset
    from sampleopt.metrics.classifier import class_histogram, classifier_fid, load_digit_classifier

    base = so.load_base_model("mnist")
    with torch.no_grad():
        x = base.sampler("ddim", 20).sample(200, generator=torch.Generator().manual_seed(0))
    clf = load_digit_classifier()
    counts, confidence = class_histogram(x, clf)
    assert int((counts > 0).sum()) == 10 and confidence > 0.85
    train, _ = get_dataset("mnist").load("train")
    noise = torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    assert classifier_fid(x, train, clf) < 0.2 * classifier_fid(noise, train, clf)
