"""Detectors on the real-world classifiers' training sets (docs/science.md §4-5).

The poisoned training set of :mod:`implicitbias.tasks.classifier_poisoning` holds the clean rows plus a
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

from ..models.training import evaluate
from ..tasks.classifier_poisoning import Config, run_seed, train_victim
from . import detectors as det
from .detection import flag, record_detection

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


def defend_cell(rcfg: Config, names: tuple[str, ...] = DETECTORS, **opts) -> dict:
    """The real-world defense cell (docs/science.md §4-5): per seed of ``rcfg``, the clean and poisoned
    runs of the real-world protocol (:func:`implicitbias.tasks.classifier_poisoning.run_seed`), every
    detector of ``names`` on the poisoned set (the poisoned model's penultimate features) and on the
    clean set (the clean model's), its flags removed and the model retrained from the same
    initialisation with the same protocol (the poisoned set's retraining continues until it fits as
    well as the clean model did). ``opts``: :func:`score`'s options. Per seed: test and target error of
    clean / poisoned / defended models, AUROC, recall at the true count."""
    keys = ("auroc", "recall", "n_flagged", "n_poison_flagged", "n_flagged_clean", "roc_fpr", "roc_tpr",
            "error_defended", "target_error_defended", "error_clean_defended", "fits_defended")
    dets = {n: {k: [] for k in keys} for n in names}
    out = {"seeds": list(rcfg.seeds), "n_poisons": rcfg.n_poisons, "error_clean": [], "error_poisoned": [],
           "target_error_clean": [], "target_error_poisoned": [], "detectors": dets, "retrained": []}

    def one_seed(seed: int) -> None:
        run = run_seed(rcfg, seed)
        r = run.record
        ds, tidx = run.data, r["arrays"]["target_idx"]
        xt, yt = np.asarray(ds.x_test), np.asarray(ds.y_test)
        ps = run.sets["poisoned"]
        x_p, y_p, is_p = np.asarray(ps.x), np.asarray(ps.y), np.asarray(ps.is_poison)
        # the clean model's own training set (with n_pool, its rows of the pool; the poisoned set's clean
        # rows differ from it when redraw_clean)
        rows = r["arrays"].get("train_rows", np.arange(ds.x_train.shape[0]))
        x_c, y_c = np.asarray(ds.x_train)[rows], np.asarray(ds.y_train)[rows]
        init = run.inits["poisoned"]
        key = jax.random.PRNGKey(seed)

        def errors(model):
            return (1 - evaluate(model, xt, yt)["accuracy"], 1 - evaluate(model, xt[tidx], yt[tidx])["accuracy"])

        base = {"poisoned": (1 - r["poisoned"]["test_acc"], 1 - r["poisoned"]["target_acc"], True),
                "clean": (1 - r["clean"]["test_acc"], 1 - r["clean"]["target_acc"], True)}
        out["error_clean"].append(base["clean"][0])
        out["error_poisoned"].append(base["poisoned"][0])
        out["target_error_clean"].append(base["clean"][1])
        out["target_error_poisoned"].append(base["poisoned"][1])
        cache: dict = {}

        def fit(which, x, y, keep):
            if keep.all():
                return base[which]
            k = (which, keep.tobytes())
            if k not in cache:
                # the realworld protocol: the poisoned set's retraining continues until it fits as well as
                # the clean model did; the clean set is trained as the clean model was
                target = r["clean"]["train_loss"] if which == "poisoned" else None
                res = train_victim(rcfg, init, x[keep], y[keep], key, target)
                cache[k] = (*errors(res.model), bool(res.fits))
            return cache[k]

        F_p = penultimate(run.models["poisoned"], x_p)
        F_c = penultimate(run.models["clean"], x_c)
        for n in names:
            d = dets[n]
            s, f = score(n, x_p, y_p, F_p, seed, **opts)
            record_detection(d, s, f, is_p, "n_poison_flagged")
            e, te, fits = fit("poisoned", x_p, y_p, ~f)
            d["error_defended"].append(e)
            d["target_error_defended"].append(te)
            d["fits_defended"].append(fits)
            _, fc = score(n, x_c, y_c, F_c, seed, **opts)
            d["n_flagged_clean"].append(int(fc.sum()))
            d["error_clean_defended"].append(fit("clean", x_c, y_c, ~fc)[0])
        out["retrained"].append(len(cache))

    for seed in rcfg.seeds:
        one_seed(seed)
    return out
