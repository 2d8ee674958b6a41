"""Streaming ``tf.data`` pipelines over the manifest, and checks of a split.

Images are read from disk batch by batch, through
:func:`bcp_core.imaging.preparation.preprocess_image` (decoding and
:func:`~bcp_core.imaging.preparation.prepare`, the path prediction takes as well), in parallel,
with prefetching; memory holds a few batches, never the dataset. With a
:class:`~bcp_core.imaging.cache.PreparedCache`, a file prepared once is read back from disk
instead. Augmentation is applied to the training split only.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from bcp_core.errors import UserError
from bcp_core.imaging.cache import PreparedCache
from bcp_core.imaging.preparation import PreprocessSpec, preprocess_image

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class ReadFailures:
    """Images that could not be read while streaming (they are skipped, and reported)."""

    messages: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, path: str, message: str) -> None:
        with self._lock:
            self.messages[path] = message


def _loader(spec: PreprocessSpec, failures: ReadFailures | None, cache: PreparedCache | None):
    """A numpy function for tf.data: path bytes -> (H, W, 1) float32, raising on bad files;
    through ``cache`` (of the same spec) when given."""
    if cache is not None and cache.spec != spec:
        raise ValueError("The cache of prepared images holds another preprocessing.")
    prepared = cache.load if cache is not None else (lambda path: preprocess_image(path, spec))

    def load(path: bytes) -> np.ndarray:
        text = path.decode("utf-8")
        try:
            return prepared(text)
        except UserError as exc:
            if failures is not None:
                failures.add(text, str(exc))
            # TensorFlow logs the traceback of a failed element; without the chained cause
            # (whose text may hold the full path of patient data) it shows only the sentence.
            raise UserError(str(exc)) from None

    return load


def augmenter(seed: int) -> keras.Sequential:
    """Training-only augmentation: vertical flips, small rotations and zoom, contrast.

    No left-right flip: preprocessing puts every chest wall on the left on purpose.
    """
    layers = keras.layers
    return keras.Sequential(
        [
            layers.RandomFlip("vertical", seed=seed),
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
            layers.RandomZoom((-0.1, 0.1), fill_mode="constant", seed=seed),
            layers.RandomContrast(0.15, seed=seed),
        ],
        name="augmentation",
    )


def image_dataset(
    paths: Iterable[str],
    labels: Iterable[int] | None,
    spec: PreprocessSpec,
    *,
    batch_size: int = 16,
    training: bool = False,
    seed: int = 42,
    augment: bool = True,
    failures: ReadFailures | None = None,
    shard: tuple[int, int] = (0, 1),
    metadata: np.ndarray | None = None,
    cache: PreparedCache | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of preprocessed images (and labels when given).

    Args:
        paths: image files.
        labels: 0/1 per image, or None for prediction.
        spec: the preprocessing (network input size and options).
        batch_size: images per batch.
        training: shuffle every epoch and (with ``augment``) augment.
        seed: seed of the shuffle and the augmentation.
        augment: apply :func:`augmenter` (training only).
        failures: collects the files that could not be read; they are skipped.
        shard: ``(index, count)``: keep every count-th path from the index-th, after the
            shuffle and before anything is read (a worker's share in multi-worker training:
            every worker shuffles the paths alike, so at each step the workers' batches
            together hold the images one process's batch would).
        metadata: float32 (len(paths), k), the encoded workbook columns of each image
            (:mod:`bcp_core.model.columns`), for a model that takes them beside the image.
        cache: prepared images kept on disk (:mod:`bcp_core.imaging.cache`), of ``spec``;
            None: every read decodes and prepares the file.

    Returns:
        Elements ``(images, labels)`` with images float32 (B, H, W, 1), labels float32 (B,);
        or just images when ``labels`` is None; with ``metadata``, ``images`` is the pair
        ``(images, metadata)``. Order is kept unless ``training``.
    """
    paths = [str(p) for p in paths]
    sources = paths if metadata is None else (paths, np.asarray(metadata, np.float32))
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(sources)
    else:
        ds = tf.data.Dataset.from_tensor_slices((sources, np.asarray(list(labels), np.float32)))
    if training:
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    ds = _sharded(ds, shard)  # after the shuffle: the workers' batches make up one-process ones
    kind = (labels is not None, metadata is not None)
    return _finish(ds, spec, batch_size, training and augment, seed, failures, kind, cache)


def _sharded(ds: tf.data.Dataset, shard: tuple[int, int]) -> tf.data.Dataset:
    index, count = shard
    return ds if count == 1 else ds.shard(count, index)


def _finish(ds, spec, batch_size, augment, seed, failures, kind: tuple[bool, bool], cache):
    """Read, batch, augment (images only) and prefetch; ``kind`` is (labelled, with metadata)."""
    labelled, with_metadata = kind
    load = _loader(spec, failures, cache)
    shape = (spec.height, spec.width, 1)

    def read(path):
        img = tf.numpy_function(load, [path], tf.float32, stateful=False)
        img.set_shape(shape)
        return img

    def read_source(source):  # a path, or (path, metadata)
        return (read(source[0]), source[1]) if with_metadata else read(source)

    if labelled:
        ds = ds.map(
            lambda s, y: (read_source(s), y), num_parallel_calls=AUTOTUNE, deterministic=True
        )
    elif with_metadata:
        ds = ds.map(lambda p, m: (read(p), m), num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(read, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(batch_size)
    if augment:
        aug = augmenter(seed)

        def augmented(images):
            return tf.clip_by_value(aug(images, training=True), 0.0, 1.0)

        def apply(x, y):
            return ((augmented(x[0]), x[1]) if with_metadata else augmented(x)), y

        # One batch after another: the layers draw from their random state in call order, so
        # batches augmented in parallel took whichever draws came first and a seed's run did
        # not repeat. Augmenting a batch of 16 at 320 x 256 takes ~25 ms of a 1-2 s step.
        ds = ds.map(apply)
    return ds.prefetch(AUTOTUNE)


def balanced_dataset(
    paths: list[str],
    labels: list[int],
    spec: PreprocessSpec,
    *,
    positive_share: float = 0.25,
    batch_size: int = 16,
    seed: int = 42,
    augment: bool = True,
    failures: ReadFailures | None = None,
    shard: tuple[int, int] = (0, 1),
    metadata: np.ndarray | None = None,
    cache: PreparedCache | None = None,
) -> tuple[tf.data.Dataset, int]:
    """Oversampled training data: each image is a cancer image with ``positive_share`` odds.

    The top systems fed about one positive per seven images; the default here is one in four.
    ``shard`` is as :func:`image_dataset`'s, applied to the mixed stream of paths; so are
    ``metadata`` and ``cache``.

    Returns:
        ``(dataset, steps_per_epoch)``; the dataset repeats forever, an epoch being as many
        images as the training split holds.
    """
    if not 0.0 < positive_share < 1.0:
        raise UserError(f"Positive share must be between 0 and 1, got {positive_share!r}.")
    arr = np.asarray(labels)
    parts = []
    for cls in (1, 0):
        chosen = np.flatnonzero(arr == cls)
        if not chosen.size:
            raise UserError("Oversampling needs both classes in the training split.")
        sel: Any = [paths[i] for i in chosen]
        if metadata is not None:
            sel = (sel, np.asarray(metadata, np.float32)[chosen])
        part = tf.data.Dataset.from_tensor_slices((sel, np.full(chosen.size, cls, np.float32)))
        parts.append(part.shuffle(chosen.size, seed=seed, reshuffle_each_iteration=True).repeat())
    mixed = tf.data.Dataset.sample_from_datasets(
        parts, weights=[positive_share, 1.0 - positive_share], seed=seed
    )
    mixed = _sharded(mixed, shard)
    kind = (True, metadata is not None)
    ds = _finish(mixed, spec, batch_size, augment, seed, failures, kind, cache)
    return ds, max(1, math.ceil(len(paths) / batch_size))


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Weights n / (2 n_c) per class, so both classes weigh the same in the loss.

    Raises:
        UserError: if a class is missing.
    """
    arr = np.asarray(list(labels))
    n = len(arr)
    counts = {c: int((arr == c).sum()) for c in (0, 1)}
    if min(counts.values()) == 0:
        raise UserError("Training needs images of both classes; one class has none.")
    return {c: n / (2.0 * k) for c, k in counts.items()}


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """BLAKE2b digest of a file's bytes (identical images have identical digests)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cross_split_duplicates_df(manifest: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Images whose bytes are identical but which sit in different splits (a leak).

    Returns:
        DataFrame with columns ``digest``, ``relpath``, ``split`` for every image of such a group.
    """
    digests = manifest["path"].map(file_digest)
    df = pd.DataFrame({"digest": digests, "relpath": manifest["relpath"], "split": split})
    groups = df.groupby("digest")["split"].nunique()
    leaked = groups.index[groups > 1]
    return df[df["digest"].isin(leaked)].sort_values(["digest", "split"], ignore_index=True)
