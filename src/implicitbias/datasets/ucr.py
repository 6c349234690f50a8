"""Temporal classification sets from the UCR/UEA archive that ship inside ``sktime`` (docs/science.md §4).

The ``.ts`` files are read from the installed ``sktime`` package directory with
``sktime.datasets.load_from_tsfile``: nothing is ever downloaded (a missing file is an error).
``sktime`` rather than ``aeon``: aeon 1.6 needs numba < 0.64, hence numpy < 2.4, which conflicts
with this project's numpy pin; sktime's core install has no numba and bundles the same files.

Sequences are ``(N, L, n_channels)``. By default the archive's own train/test split is kept; with
``split_seed`` set, train and test are pooled and re-split (stratified, same training size unless
``n_train`` is given). Standardisation is fit on the training split only.
"""

from __future__ import annotations

import os

import numpy as np

from .base import MissingDataError, SequenceDataset, make_dataset

# Bundled, equal-length sets: name -> (length, channels, classes, canonical train size).
DATASETS = {
    "ItalyPowerDemand": (24, 1, 2, 67),
    "GunPoint": (150, 1, 2, 50),
    "ArrowHead": (251, 1, 3, 36),
    "OSULeaf": (427, 1, 6, 200),
    "BasicMotions": (100, 6, 4, 40),
    "ACSF1": (1460, 1, 10, 100),
}
# max - min over every value of the archive's train and test files (no pixel range; an ℓ∞ budget of
# 16/255 of the range is ``16/255 * RAW_RANGES[name]``; checked by the tests)
RAW_RANGES = {"ItalyPowerDemand": 5.6872202000000005}
# train + test sequences of the archive (a re-split pools them)
TOTALS = {"ItalyPowerDemand": 1096, "GunPoint": 200, "ArrowHead": 211, "OSULeaf": 442, "BasicMotions": 80,
          "ACSF1": 200}


def _data_dir() -> str:
    import sktime.datasets

    return os.path.join(os.path.dirname(sktime.datasets.__file__), "data")


def _read(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from sktime.datasets import load_from_tsfile

    path = os.path.join(_data_dir(), name, f"{name}_{split}.ts")
    if not os.path.isfile(path):
        raise MissingDataError(f"bundled UCR file not found: {path} (is sktime installed in full?)")
    X, y = load_from_tsfile(path, return_data_type="numpy3D")
    return np.transpose(np.asarray(X, np.float64), (0, 2, 1)), np.asarray(y).astype(str)


def _label_codes(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(labels.tolist()), key=lambda s: (0, float(s), s) if _is_number(s) else (1, 0.0, s))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[s] for s in labels], np.int64), classes


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_ucr(name: str = "ItalyPowerDemand", split_seed: int | None = None, n_train: int | None = None,
             standardize: str = "channel") -> SequenceDataset:
    """Load a bundled UCR/UEA set (``DATASETS`` lists them) as a ``SequenceDataset``.

    ``split_seed=None`` keeps the archive's split (``n_train`` must then be None); an integer
    pools and re-splits, stratified, with ``n_train`` training examples (default: the archive's).
    ``standardize``: ``"channel"`` (default; per channel over all steps), ``"feature"`` or ``"none"``.
    Labels are mapped to ``0..K-1`` in sorted order (``meta["classes"]`` holds the originals).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown bundled UCR set {name!r}; available: {sorted(DATASETS)}")
    if split_seed is None and n_train is not None:
        raise ValueError("n_train needs split_seed (the archive's own split has a fixed size)")
    x_tr, y_tr = _read(name, "TRAIN")
    x_te, y_te = _read(name, "TEST")
    for x, part in ((x_tr, "TRAIN"), (x_te, "TEST")):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}_{part} contains missing or non-finite values")
    codes, classes = _label_codes(np.concatenate([y_tr, y_te]))
    c_tr, c_te = codes[: len(y_tr)], codes[len(y_tr):]
    if split_seed is not None:
        from sklearn.model_selection import train_test_split

        x_all, c_all = np.concatenate([x_tr, x_te]), codes
        n_train = len(y_tr) if n_train is None else n_train
        if not isinstance(n_train, int) or not len(classes) <= n_train <= len(c_all) - len(classes):
            raise ValueError(
                f"n_train must be an integer in [{len(classes)}, {len(c_all) - len(classes)}], got {n_train!r}"
            )
        i_tr, i_te = train_test_split(
            np.arange(len(c_all)), train_size=n_train, stratify=c_all, random_state=split_seed
        )
        x_tr, c_tr, x_te, c_te = x_all[i_tr], c_all[i_tr], x_all[i_te], c_all[i_te]
    meta = {
        "name": name,
        "n_classes": len(classes),
        "classes": classes,
        "scan": "time",
        "seed": split_seed,
        "raw_range": float(np.ptp(x_tr)),
    }
    return make_dataset(x_tr, c_tr, x_te, c_te, standardize, meta)
