"""The authors' initialisation stream: TensorFlow's stateless normal, re-implemented in NumPy.

The paper's code (TensorFlow 2.4 / Keras 2.4) seeds every initializer with the run's seed, and a
seeded Keras 2.4 initializer draws ``tf.random.stateless_normal(shape, seed=[seed, 0])``: each
weight is the *prefix* of one and the same ``N(0, 1)`` stream, scaled by its standard deviation.
So ``B`` and ``C`` hold the same values, the diagonal of ``A`` is every ``(d+1)``-th value of that
stream, and a network's first and last layers are equal. Reproducing the stream lets Table 1 start
from the authors' very initialisations (docs/science.md §2b, §2c; ``table1.Config.init_rng="keras"``).

The generator is Philox-4x32-10 with TensorFlow's seed scrambling, and Box-Muller on float32
uniforms. ``tests/test_keras_init.py`` compares it with values printed by TensorFlow.
"""

from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)


def philox4x32(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox-4x32 with 10 rounds. ``counters: (n, 4)`` uint32 words -> ``(n, 4)`` uint32 outputs."""
    c = [counters[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(10):
        p0, p1 = _M0 * c[0], _M1 * c[2]  # 32 x 32 -> 64 bits: exact in uint64
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _MASK, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _MASK]
        if r < 9:
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return np.stack(c, axis=1).astype(np.uint32)


def _key_counter(seed: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray]:
    """TensorFlow's scrambling of a two-word seed into a Philox key and starting counter."""
    s0, s1 = (int(s) & 0xFFFFFFFFFFFFFFFF for s in seed)
    words = np.array([[s0 & 0xFFFFFFFF, s0 >> 32, s1 & 0xFFFFFFFF, s1 >> 32]], np.uint32)
    mix = philox4x32(words, _SCRAMBLE_KEY)[0]
    return (int(mix[0]), int(mix[1])), np.array([0, 0, mix[2], mix[3]], np.uint32)


def _unit_float(x: np.ndarray) -> np.ndarray:
    """uint32 -> float32 in [0, 1) from the 23 mantissa bits (TensorFlow's ``Uint32ToFloat``)."""
    bits = (np.uint32(127) << np.uint32(23)) | (x & np.uint32(0x7FFFFF))
    return bits.view(np.float32) - np.float32(1.0)


def stateless_normal(n: int, seed: tuple[int, int]) -> np.ndarray:
    """The first ``n`` values of ``tf.random.stateless_normal(shape, seed)`` (float32, any shape of
    ``n`` elements, row-major). ``(n,)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    key, start = _key_counter(seed)
    calls = -(-n // 4)
    idx = np.arange(calls, dtype=np.uint64)
    low = np.uint64(start[0]) + idx  # the 128-bit counter starts at (0, 0, ., .): no carry for any n we use
    counters = np.stack([low & _MASK, low >> np.uint64(32), np.full(calls, start[2], np.uint64),
                         np.full(calls, start[3], np.uint64)], axis=1).astype(np.uint32)
    bits = philox4x32(counters, key)
    u1 = np.maximum(_unit_float(bits[:, 0::2]), np.float32(1e-7))
    v1 = np.float32(2.0 * np.pi) * _unit_float(bits[:, 1::2])
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    out = np.empty((calls, 4), np.float32)
    out[:, 0::2], out[:, 1::2] = np.sin(v1) * radius, np.cos(v1) * radius
    return out.reshape(-1)[:n]


def seeded_normal(shape: tuple[int, ...], seed: int, stddev: float) -> np.ndarray:
    """``keras.initializers.RandomNormal(0, stddev, seed=seed)(shape)`` of Keras 2.4 (float32)."""
    n = int(np.prod(shape))
    return (stateless_normal(n, (seed, 0)) * np.float32(stddev)).reshape(shape)
