"""Shared test set-up: float64 on (as every experiment's run does), one compile cache per test run, and a
fake CIFAR-10 directory writer."""

import os
import pickle
import tempfile

import jax
import numpy as np

from implicitbias.core.precision import enable_float64

enable_float64()  # the library's functions are called directly; the papers' precision

# Compiled programs are shared between the test workers of one run (pytest-xdist) through a
# persistent compile cache that starts empty for every run, so test times never depend on what an
# earlier run left behind (CI starts from nothing). The CLI, called in-process, uses the same one.
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"solo-{os.getpid()}"
os.environ["IMPLICITBIAS_JAX_CACHE"] = os.path.join(tempfile.gettempdir(), f"implicitbias-test-jax-{_run}")
jax.config.update("jax_compilation_cache_dir", os.environ["IMPLICITBIAS_JAX_CACHE"])
# every program, however small: the workers then share even the per-shape compiles of eager operations
# (~25 ms each, over 2,000 in a run; one pair of runs: user time 5m58s with a 0.5 s floor, 5m42s without)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


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
