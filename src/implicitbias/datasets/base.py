"""The common return type of the real-data loaders, standardisation and input checks (docs/science.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.validate import check_finite

STANDARDIZE = ("feature", "channel", "none")


class MissingDataError(FileNotFoundError, ValueError):
    """A data file or directory the loader needs is not there. A ``FileNotFoundError`` (what it is)
    and a ``ValueError`` (bad input: the CLI prints its one-line message and exits with 2)."""


class BadDataError(ValueError):
    """A data file exists but cannot be read as what it should hold (unreadable, not the expected
    format, wrong shapes or values); the message names the file."""


@dataclass(frozen=True)
class SequenceDataset:
    """A classification data set of sequences, split into train and test.

    ``x_train (N, L, d_input)`` and ``x_test (M, L, d_input)`` are float32, ``y_train (N,)`` and
    ``y_test (M,)`` int32 labels in ``[0, n_classes)``. ``meta`` records how the data was made:
    ``name``, ``n_classes``, ``scan`` (scan order), ``seed``, ``standardize``, and ``mean``/``std``
    (float32 arrays broadcastable to ``(L, d_input)``, fit on the training split only) so that a
    raw value ``v`` became ``(v - mean) / std``; ``raw_range`` is the span of the raw values
    (e.g. 16 for digits, 255 for CIFAR) to express perturbation budgets in raw units.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 3:
                raise ValueError(f"x_{split} must have shape (N, L, d_input), got {x.shape}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"y_{split} must have shape ({x.shape[0]},), got {y.shape}")
            check_finite(f"x_{split}", x)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test sequences differ in shape: {self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )

    @property
    def seq_len(self) -> int:
        return self.x_train.shape[1]

    @property
    def d_input(self) -> int:
        return self.x_train.shape[2]

    @property
    def n_classes(self) -> int:
        return int(self.meta.get("n_classes", max(self.y_train.max(), self.y_test.max()) + 1))


def fit_standardizer(x_train: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` (float32, shape ``(L, C)`` or ``(1, C)``) from the training split only.

    ``mode``: ``"feature"`` (per position and channel), ``"channel"`` (per channel over all
    positions) or ``"none"``. Constant features get ``std = 1`` (no division by zero).
    """
    if mode not in STANDARDIZE:
        raise ValueError(f"standardize must be one of {STANDARDIZE}, got {mode!r}")
    x = np.asarray(x_train, np.float64)
    if mode == "none":
        return np.zeros((1, x.shape[2]), np.float32), np.ones((1, x.shape[2]), np.float32)
    axes = (0,) if mode == "feature" else (0, 1)
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    std = np.where(std < 1e-8, 1.0, std)
    if mode == "channel":
        mean, std = mean[None], std[None]
    return mean.astype(np.float32), std.astype(np.float32)


def make_dataset(x_train, y_train, x_test, y_test, standardize: str, meta: dict) -> SequenceDataset:
    """Standardise with train-only statistics and pack into a ``SequenceDataset``."""
    check_finite("x_train", np.asarray(x_train, np.float64))
    check_finite("x_test", np.asarray(x_test, np.float64))
    mean, std = fit_standardizer(x_train, standardize)
    norm = lambda x: ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)
    meta = dict(meta, standardize=standardize, mean=mean, std=std)
    return SequenceDataset(
        norm(x_train), np.asarray(y_train, np.int32), norm(x_test), np.asarray(y_test, np.int32), meta
    )
