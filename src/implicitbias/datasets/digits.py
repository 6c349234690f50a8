"""scikit-learn's 8x8 handwritten digits as length-64 sequences (docs/science.md §4, CPU-sized real data).

1,797 grey-scale images with values 0..16, ten classes, shipped inside scikit-learn (no download).
Each image becomes a sequence of 64 steps with one input channel; ``scan`` fixes the order:
``"row"`` (row-major: step ``t`` reads pixel ``(t // 8, t % 8)``, so the last row is the last 8
steps) or ``"column"`` (column-major: step ``t`` reads pixel ``(t % 8, t // 8)``).
"""

from __future__ import annotations

import numpy as np

from .base import SequenceDataset, make_dataset

SCANS = ("row", "column")


def image_to_sequence(images: np.ndarray, scan: str) -> np.ndarray:
    """``(N, H, W)`` images to ``(N, H*W, 1)`` sequences in the given scan order."""
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    if scan == "column":
        images = np.swapaxes(images, 1, 2)
    return images.reshape(images.shape[0], -1, 1)


def load_digits(n_train: int = 1000, seed: int = 0, scan: str = "row", standardize: str = "feature") -> SequenceDataset:
    """Digits as sequences ``(N, 64, 1)``: a stratified split with ``n_train`` training examples
    drawn with ``seed`` (the other ``1797 - n_train`` are the test set), standardised with
    statistics of the training split only (``standardize``: ``"feature"``, ``"channel"``, ``"none"``).
    """
    from sklearn.datasets import load_digits as _sk_load
    from sklearn.model_selection import train_test_split

    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    bunch = _sk_load()
    images, labels = bunch.images.astype(np.float64), bunch.target.astype(np.int64)
    n = images.shape[0]
    if not isinstance(n_train, int) or not 10 <= n_train <= n - 10:
        raise ValueError(f"n_train must be an integer in [10, {n - 10}], got {n_train!r}")
    idx_train, idx_test = train_test_split(np.arange(n), train_size=n_train, stratify=labels, random_state=seed)
    seqs = image_to_sequence(images, scan)
    meta = {"name": "digits", "n_classes": 10, "scan": scan, "seed": seed, "n_train": n_train,
            "raw_range": 16.0, "image_shape": (8, 8), "idx_train": idx_train, "idx_test": idx_test}
    return make_dataset(seqs[idx_train], labels[idx_train], seqs[idx_test], labels[idx_test], standardize, meta)
