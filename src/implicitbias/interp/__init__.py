"""Interpretability of SSM language models (docs/science.md §6; arXiv 2505.24244, ``nirendy/mamba-knockout``):

* :mod:`.knockout`: attention knockout, the authors' ZERO_ATTENTION: ``alpha(t, s) = 0`` for every
  target ``t`` and source ``s``, computed with a second scan whose source inputs are removed (no
  ``L x L`` matrix), with an exempt mask over channels (Mamba-1) or heads (Mamba-2);
* :mod:`.implicit_attention`: the materialised ``alpha`` of Mamba-1 (per channel, summed over
  states) and Mamba-2 (per head), for heatmaps and as the independent check of the knockout;
* :mod:`.attention_knockout`: the transformer baseline's knockout, an attention mask (``finfo.min`` on
  the (target, source) scores, renormalised by the softmax), and a layer's attention weights;
* :mod:`.info_flow`: the authors' positions, every (window, source set) variant of a prompt in one
  compiled call, the relative-change metric with intervals, heatmaps;
* :mod:`.pipeline`: evaluate, filter, info flow and heatmap on a real checkpoint with CounterFact.
"""

from . import attention_knockout, implicit_attention, info_flow, knockout, pipeline

__all__ = ["attention_knockout", "implicit_attention", "info_flow", "knockout", "pipeline"]
