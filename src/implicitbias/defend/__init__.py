"""Defenses against clean-label poisoning of the implicit bias (docs/science.md §5, "Defenses").

* :mod:`.detection` -- AUROC, recall at the true count, ROC curves, flag rules that do not know
  how many examples are poisoned;
* :mod:`.detectors` -- suspicion scores: theory-guided (end energy, the non-greedy ``gamma`` terms),
  influence-style, and the literature's baselines (spectral signatures, activation clustering,
  deep k-NN);
* :mod:`.training` -- training-time defenses (per-example clipping with noise, circular shifts);
* :mod:`.synthetic` -- the whole pipeline on Table 1's teacher-student cells;
* :mod:`.realworld` -- the detectors on the real-world classifiers' training sets.
"""
