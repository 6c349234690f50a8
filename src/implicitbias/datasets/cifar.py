"""Sequential CIFAR-10 from a local copy of the python-pickle batches (docs/science.md §4; never downloads).

Point ``load_cifar10`` at the directory that holds ``data_batch_1`` .. ``data_batch_5`` and
``test_batch`` (the "CIFAR-10 python version" archive, unpacked). Each stored row is 3,072 uint8
values in channel-major order: the red plane (32 x 32, row-major), then green, then blue. Two
scan orders turn an image into a sequence of 1,024 steps with 3 inputs each:

* ``"row"`` — row-major pixels, 3 channels per step: step ``t`` holds pixel ``(t // 32, t % 32)``
  as ``(R, G, B)``; the last image row is the last 32 steps, in every channel.
* ``"channel_major"`` — the stored row reinterpreted as ``(1024, 3)`` (what the paper's S4/LRU code
  effectively did): step ``t`` holds stored values ``3t, 3t+1, 3t+2``. Steps 0..340 read red,
  683..1023 read blue, so the last steps cover only the blue plane's bottom rows.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from .base import BadDataError, MissingDataError, SequenceDataset, make_dataset

SCANS = ("row", "channel_major")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


def rows_to_sequences(rows: np.ndarray, scan: str) -> np.ndarray:
    """Stored rows ``(N, 3072)`` to sequences ``(N, 1024, 3)`` in the given scan order."""
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != 3072:
        raise ValueError(f"CIFAR rows must have shape (N, 3072), got {rows.shape}")
    if scan == "channel_major":
        return rows.reshape(-1, 1024, 3)
    return rows.reshape(-1, 3, 1024).transpose(0, 2, 1)


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data (N, 3072) uint8, labels (N,) int64)`` of one pickled batch; a :class:`BadDataError`
    naming ``path`` for a file that cannot be read or is not a CIFAR-10 batch."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except OSError as e:
        raise BadDataError(f"cannot read CIFAR-10 batch {path}: {e.strerror or e}") from None
    except Exception as e:  # bytes that are not a pickle can raise almost anything
        raise BadDataError(
            f"{path} is not a CIFAR-10 python batch (unpickling failed: {type(e).__name__}); "
            f"unpack the python version of CIFAR-10 there"
        ) from None
    if not isinstance(d, dict):
        raise BadDataError(f"{path} is not a CIFAR-10 batch (holds a {type(d).__name__}, not a dict)")
    d = {(k.decode(errors="replace") if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise BadDataError(f"{path} is not a CIFAR-10 batch (no 'data'/'labels' entries)")
    try:
        data, labels = np.asarray(d["data"]), np.asarray(d["labels"], np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BadDataError(f"{path}: 'labels' must be a list of integers") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise BadDataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    if data.dtype != np.uint8:
        if not (np.issubdtype(data.dtype, np.integer) and (data.size == 0 or (data.min() >= 0 and data.max() <= 255))):
            raise BadDataError(f"{path}: 'data' must hold pixel values 0..255 (uint8), got dtype {data.dtype}")
        data = data.astype(np.uint8)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise BadDataError(f"{path}: labels must lie in 0..9")
    return data, labels


def load_cifar10(data_dir: str | os.PathLike, scan: str = "row", standardize: str = "channel",
                 n_train: int | None = None, n_test: int | None = None) -> SequenceDataset:
    """Sequential CIFAR-10 ``(N, 1024, 3)`` from the pickle batches in ``data_dir``.

    ``n_train`` / ``n_test`` keep only the first examples of each split (for quick runs).
    Pixels are scaled to ``[0, 1]`` and then standardised with training statistics
    (``standardize``: ``"channel"`` (default), ``"feature"`` or ``"none"``).
    """
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    for n, name in ((n_train, "n_train"), (n_test, "n_test")):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
            raise ValueError(f"{name} must be a positive integer or None, got {n!r}")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        what = "is not a directory" if os.path.exists(data_dir) else "not found"
        raise MissingDataError(f"CIFAR-10 directory {what}: {data_dir!r} (unpack the python version "
                               f"of CIFAR-10 there; this library never downloads it)")
    missing = [f for f in TRAIN_FILES + (TEST_FILE,) if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise MissingDataError(f"CIFAR-10 files missing in {data_dir!r}: {', '.join(missing)}")
    parts = [_read_batch(os.path.join(data_dir, f)) for f in TRAIN_FILES]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_batch(os.path.join(data_dir, TEST_FILE))
    for n, have, name in ((n_train, len(y_tr), "n_train"), (n_test, len(y_te), "n_test")):
        if n is not None and n > have:
            raise BadDataError(f"{name}={n} but the CIFAR-10 batches in {data_dir!r} hold only {have} images")
    x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    x_te, y_te = x_te[:n_test], y_te[:n_test]
    to_seq = lambda rows: rows_to_sequences(rows, scan).astype(np.float64) / 255.0
    meta = {"name": "cifar10", "n_classes": 10, "scan": scan, "seed": None, "raw_range": 1.0, "data_dir": data_dir}
    return make_dataset(to_seq(x_tr), y_tr, to_seq(x_te), y_te, standardize, meta)
