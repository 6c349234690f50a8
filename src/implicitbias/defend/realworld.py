"""Detectors on the real-world classifiers' training sets (docs/science.md §4-5).

The poisoned training set of :mod:`implicitbias.experiments.realworld` holds the clean rows plus a
perturbed copy of each poison (``duplicate`` mode), all with their correct labels. Scores per row:

* ``spectral``, ``clustering``, ``deep_knn``: the literature's baselines
  (:mod:`.detectors`) on the classifier's penultimate features (:func:`penultimate`: the pooled
  hidden sequence the linear head reads);
* ``tail_nearest``, ``tail_class_mean``: the theory's signature, the share of the row's deviation
  from a reference (its nearest same-label row, or its class mean) in the last ``last_frac`` of
  the sequence (:func:`.detectors.tail_deviation`);
* ``random``: a reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import detectors as det
from .evaluate import flag

DETECTORS = ("spectral", "clustering", "deep_knn", "tail_nearest", "tail_class_mean", "random")


def penultimate(model, x, chunk: int = 256) -> np.ndarray:
    """The features the classifier's head reads: the hidden sequence after the last block, pooled as
    the model reads out (mean over time, or the last step), through the head's norm if it has one.
    ``x: (N, L, C)`` -> ``(N, d_model)``; evaluated without dropout, in chunks of ``chunk`` rows."""

    @jax.jit
    def feats(xb):
        def one(xi):
            h = model.features(xi)
            pooled = jnp.mean(h, axis=0) if model.readout == "mean" else h[-1]
            return model.head_norm(pooled) if model.head_norm is not None else pooled

        return jax.vmap(one)(xb)

    x = np.asarray(x)
    return np.concatenate([np.asarray(feats(jnp.asarray(x[i : i + chunk]))) for i in range(0, x.shape[0], chunk)])


def score(name: str, x, y, features, seed: int, last_frac: float = 0.25, knn_k: int = 10,
          ac_components: int = 10, min_gap: float = 0.5, tail_threshold: float = 0.5):
    """``(scores, flags)`` of detector ``name`` on one training set: inputs ``x: (N, L, C)``, labels
    ``y: (N,)``, penultimate ``features: (N, D)`` of the model trained on it. Flags: the baselines'
    own rules (activation clustering: a small cluster; deep k-NN: the neighbours' plurality label
    differs), a deviation above ``tail_threshold`` (relative to the largest) for the tail scores, the
    largest gap otherwise."""
    y = np.asarray(y)
    if name == "spectral":
        s = det.spectral_signature(features, y)
        return s, flag(s, "gap", min_gap=min_gap)
    if name == "clustering":
        return det.activation_clustering(features, y, n_components=ac_components)
    if name == "deep_knn":
        return det.deep_knn(features, y, k=knn_k)
    if name in ("tail_nearest", "tail_class_mean"):
        s = det.tail_deviation(x, y, last_frac, reference=name.removeprefix("tail_"))
        return s, flag(s, "threshold", tail_threshold)
    if name == "random":
        s = np.random.default_rng([seed, 7, len(y)]).random(len(y))
        return s, flag(s, "gap", min_gap=min_gap)
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
