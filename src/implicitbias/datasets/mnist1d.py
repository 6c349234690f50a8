"""MNIST-1D (Greydanus 2020) as length-40 sequences, generated procedurally by the ``mnist1d`` package
(docs/science.md §4: real data that needs no download).

The package's ``make_dataset`` builds the set from ten hand-written 1-D templates (padding, shear,
scaling, translation, correlated and i.i.d. noise) with the global NumPy/`random` generators seeded
by ``args.seed``. We call it with the package's own default arguments pinned below (``ARGS``: 5,000
sequences of length 40, 4,000 train / 1,000 test, seed 42; the set the package's authors publish),
save and restore the global generator states around the call (no global randomness leaks), and
never use its download path. The result is cached per process (about 2 s to generate).

Sequences are ``(N, 40, 1)``; the package already centres the whole set and scales it to unit
standard deviation, and we then standardise with train-only statistics like every loader.
``meta["raw_range"]`` is the span of the training values (``RAW_RANGE``, a constant of the pinned
generation, checked by the tests): an ℓ∞ budget of ``16/255`` of the range is ``eps = 16/255 * RAW_RANGE``.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from .base import SequenceDataset, make_dataset

# mnist1d.data.get_dataset_args() of mnist1d 0.0.2.post1, pinned (without the download url)
ARGS = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}
N_TRAIN, N_TEST, LENGTH = 4000, 1000, 40
RAW_RANGE = 10.01293474505318  # max - min of the 4,000 training values of the pinned generation


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import make_dataset as _make
        from mnist1d.utils import ObjectView
    except ImportError as e:  # a dependency of the project; a broken install gets one clear line
        raise ImportError("MNIST-1D needs the 'mnist1d' package (pip install mnist1d==0.0.2.post1)") from e
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = _make(ObjectView(dict(ARGS)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x, xt = np.asarray(d["x"], np.float64), np.asarray(d["x_test"], np.float64)
    y, yt = np.asarray(d["y"], np.int64), np.asarray(d["y_test"], np.int64)
    for a in (x, xt, y, yt):
        a.setflags(write=False)
    return x, y, xt, yt


def load_mnist1d(n_train: int | None = None, seed: int = 0, standardize: str = "channel") -> SequenceDataset:
    """MNIST-1D as ``(N, 40, 1)`` sequences: the package's 1,000 test sequences are the test set; the
    training set is the package's 4,000 training sequences, or with ``n_train`` a stratified subset of
    that many drawn with ``seed`` (scikit-learn's ``train_test_split``), standardised with statistics
    of the training split only (``standardize``: ``"channel"`` (default), ``"feature"`` or ``"none"``)."""
    x, y, xt, yt = _generate()
    n_train = N_TRAIN if n_train is None else n_train
    if not isinstance(n_train, int) or isinstance(n_train, bool) or not 20 <= n_train <= N_TRAIN:
        raise ValueError(f"n_train must be an integer in [20, {N_TRAIN}], got {n_train!r}")
    idx = np.arange(N_TRAIN)
    if n_train < N_TRAIN:
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(idx, train_size=n_train, stratify=y, random_state=seed)
    meta = {"name": "mnist1d", "n_classes": 10, "scan": "time", "seed": seed, "n_train": n_train,
            "raw_range": RAW_RANGE, "idx_train": idx, "generator_args": dict(ARGS)}
    return make_dataset(x[idx, :, None], y[idx], xt[:, :, None], yt, standardize, meta)
