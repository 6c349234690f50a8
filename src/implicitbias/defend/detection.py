"""How a detector is judged and how its scores become a removal (docs/science.md §5, "Defenses").

A detector gives every training example a *suspicion score* (higher = more suspect). It is judged
without any threshold by :func:`auroc` (the probability that a random poison outscores a random
clean example, ties counting one half) and :func:`recall_at_k` (the share of poisons among the
``k`` highest scores, ``k`` = the true number of poisons, which the defender does not know but the
evaluator does). The defender's own decision is a *flag rule* that does not know the number of
poisons either (:func:`flag`): a fixed threshold for scores with a scale of their own (shares in
[0, 1]), the largest gap in the sorted scores for the others, or the smaller of two clusters.
"""

from __future__ import annotations

import numpy as np

RULES = ("threshold", "gap", "none")


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores: (N,)`` for the positives ``labels: (N,) bool``: the
    Mann-Whitney count ``P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)`` from average ranks, O(N log N).
    NaN when either class is empty."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    # average ranks (1-based) over runs of equal scores: a tie between a poison and a clean example
    # counts one half
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_at_k(scores, labels, k: int | None = None) -> float:
    """Share of the positives among the ``k`` highest ``scores`` (default ``k`` = number of
    positives), divided by ``min(k, #positives)``; ties at the cut are shared in proportion (the
    expected recall over random tie-breaking). NaN without positives."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    n_pos = int(y.sum())
    k = n_pos if k is None else int(k)
    if n_pos == 0 or k <= 0:
        return float("nan")
    k = min(k, s.size)
    cut = np.sort(s)[::-1][k - 1]
    above = s > cut
    at = s == cut
    take_at = k - int(above.sum())  # examples taken from the tied group at the cut
    hits = float(y[above].sum()) + take_at * float(y[at].sum()) / float(at.sum())
    return hits / min(k, n_pos)


def gap_flags(scores, min_gap: float = 0.5) -> np.ndarray:
    """Flag the examples above the largest gap in the sorted ``scores``, if that gap is at least
    ``min_gap`` times the whole range (a clear two-group split); otherwise flag nothing.
    ``(N,) -> (N,) bool``. Knows nothing of the number of poisons; flags nothing when all scores
    are equal (a clean set with nothing special)."""
    s = np.asarray(scores, float)
    flags = np.zeros(s.shape, bool)
    if s.size < 2 or not np.all(np.isfinite(s)):
        return flags
    srt = np.sort(s)
    span = srt[-1] - srt[0]
    if span <= 0:
        return flags
    gaps = np.diff(srt)
    i = int(np.argmax(gaps))
    if gaps[i] < min_gap * span:
        return flags
    return s > srt[i]


def flag(scores, rule: str, threshold: float = 0.5, min_gap: float = 0.5) -> np.ndarray:
    """The defender's removal: ``"threshold"`` flags ``scores > threshold``, ``"gap"`` uses
    :func:`gap_flags`, ``"none"`` flags nothing. ``(N,) -> (N,) bool``."""
    s = np.asarray(scores, float)
    if rule == "threshold":
        return s > threshold
    if rule == "gap":
        return gap_flags(s, min_gap)
    if rule == "none":
        return np.zeros(s.shape, bool)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1):
    ``(fpr, tpr)``, each ``(T,)``. Its trapezoid area equals :func:`auroc`."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float((y & (s >= t)).sum()) / n_pos for t in thresholds]
    fpr = [0.0] + [float((~y & (s >= t)).sum()) / n_neg for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def record_detection(rec: dict, scores, flags, labels, flagged_key: str) -> None:
    """Append one seed's detection numbers to the per-detector lists ``rec``: ``auroc``, ``recall`` (at the
    true count), ``n_flagged``, ``flagged_key`` (flagged rows that are truly bad), ``roc_fpr``, ``roc_tpr``.
    scores, flags, labels: ``(n,)``."""
    flags, labels = np.asarray(flags, bool), np.asarray(labels, bool)
    rec["auroc"].append(auroc(scores, labels))
    rec["recall"].append(recall_at_k(scores, labels))
    rec["n_flagged"].append(int(flags.sum()))
    rec[flagged_key].append(int((flags & labels).sum()))
    fpr, tpr = roc_curve(scores, labels)
    rec["roc_fpr"].append(fpr.tolist())
    rec["roc_tpr"].append(tpr.tolist())
