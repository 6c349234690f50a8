"""Shared test set-up: float64 on (importing the package), no persistent compile cache, and a fake
CIFAR-10 directory writer."""

import os
import pickle

import numpy as np

import implicitbias  # noqa: F401  (switches on float64)

# The CLI keeps compiled programs in ~/.cache/implicitbias/jax; tests that call it in-process would
# switch that cache on for the rest of their worker. Off, so test times do not depend on what an
# earlier run left there (CI starts from nothing).
os.environ["IMPLICITBIAS_JAX_CACHE"] = ""


def write_fake_cifar(root, n_per_batch=2, n_test=3, seed=0):
    """CIFAR-10 python batches of random uint8 images in ``root`` (5 train batches + test batch)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_per_batch
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(d, f)
        batches[name] = d
    return batches
