"""The small policy's vocabulary for the equation-chain task, built in code (docs/science.md, §5 GRPO), and the
worked solutions of its supervised warm-up.

Tokens: ``<pad>``, ``<bos>``, ``<eos>``; one per variable ``x_1 .. x_{max_label}``; one per integer
``NUM_MIN .. NUM_MAX`` (values and constants: every value a derivation of at most 16 steps reaches from a
known value in 1..10 with constants 1..3); and ``=``, ``+``, ``-``, ``.``, ``Find``, ``<think>``,
``</think>``, ``\\n``, ``<answer>``, ``</answer>``.

A prompt (:func:`encode_prompt`) is ``<bos>``, the statements as the text has them (``x_5 = x_2 + 3 .``;
``x_2 = 7 .``), ``Find x_t .``, then ``<think>``: the authors' assistant turn prefilled up to ``<think>``,
without their chat template's words. A completion is decoded to text (:func:`decode`) so that the
authors' reward and test-time answer (:mod:`implicitbias.tasks.equations`) read it unchanged: tokens are
joined by spaces except ``.`` (glued to the token before it), ``</think>``, ``\\n``, ``<answer>``,
``</answer>`` (glued on both sides), so a well-formed completion reads
``x_2 = 7. x_5 = x_2 + 3 = 10.</think>\\n<answer>10</answer>``.

The worked solution (:func:`solution`), the warm-up's target: the known value restated, then one line per
step along the chain, ``x_v = x_u + c = value .``, then ``</think>``, ``\\n``, ``<answer>``, the value,
``</answer>``, ``<eos>``: a derivation that visits only the chain (the authors' "efficient" reasoning).
"""

from __future__ import annotations

import re
from functools import cached_property

import numpy as np

from .equations import Instance

NUM_MIN, NUM_MAX = -50, 60
SPECIALS = ("<pad>", "<bos>", "<eos>")
SYMBOLS = ("=", "+", "-", ".", "Find", "<think>", "</think>", "\n", "<answer>", "</answer>")
_GLUED = {"</think>", "\n", "<answer>", "</answer>"}


class Vocab:
    """Token strings and ids for labels ``1 .. max_label``; ``ids[token]``, ``tokens[id]``."""

    def __init__(self, max_label: int = 30):
        self.max_label = max_label
        self.tokens: tuple[str, ...] = (SPECIALS + tuple(f"x_{i}" for i in range(1, max_label + 1))
                                        + tuple(str(n) for n in range(NUM_MIN, NUM_MAX + 1)) + SYMBOLS)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.bos, self.eos = (self.ids[t] for t in SPECIALS)

    def __len__(self) -> int:
        return len(self.tokens)

    def var(self, label: int) -> int:
        if not 1 <= label <= self.max_label:
            raise ValueError(f"label x_{label} is outside the vocabulary's 1..{self.max_label}")
        return self.ids[f"x_{label}"]

    def num(self, n: int) -> int:
        if not NUM_MIN <= n <= NUM_MAX:
            raise ValueError(f"integer {n} is outside the vocabulary's {NUM_MIN}..{NUM_MAX}")
        return self.ids[str(n)]

    @cached_property
    def is_var(self) -> np.ndarray:
        """``(vocab,)`` bool: the variable tokens."""
        return np.array([t.startswith("x_") for t in self.tokens])


def encode_prompt(vocab: Vocab, inst: Instance) -> np.ndarray:
    """``<bos>``, the statements in prompt order, ``Find x_t .``, ``<think>``: ``(L,)`` int32."""
    out = [vocab.bos]
    for e in inst.equations:
        out.append(vocab.var(e.lhs))
        out.append(vocab.ids["="])
        if e.rhs is None:
            out.append(vocab.num(e.value))
        else:
            out += [vocab.var(e.rhs), vocab.ids["+" if e.value > 0 else "-"], vocab.num(abs(e.value))]
        out.append(vocab.ids["."])
    out += [vocab.ids["Find"], vocab.var(inst.target), vocab.ids["."], vocab.ids["<think>"]]
    return np.asarray(out, np.int32)


def solution(vocab: Vocab, inst: Instance) -> np.ndarray:
    """The worked solution (the module's docstring), ending in ``<eos>``: ``(T,)`` int32."""
    by_lhs = {e.lhs: e for e in inst.equations if e.rhs is not None}
    value = inst.known.value
    out = [vocab.var(inst.path[0]), vocab.ids["="], vocab.num(value), vocab.ids["."]]
    for u, v in zip(inst.path[:-1], inst.path[1:]):
        e = by_lhs[v]
        assert e.rhs == u
        value += e.value
        out += [vocab.var(v), vocab.ids["="], vocab.var(u), vocab.ids["+" if e.value > 0 else "-"],
                vocab.num(abs(e.value)), vocab.ids["="], vocab.num(value), vocab.ids["."]]
    assert value == inst.answer
    out += [vocab.ids[t] for t in ("</think>", "\n", "<answer>")] + [vocab.num(value), vocab.ids["</answer>"],
                                                                     vocab.eos]
    return np.asarray(out, np.int32)


def prompt_length(n_equations: int) -> int:
    """Tokens of a prompt of ``n_equations`` statements, one of them the known value: ``<bos>``, 4 for the known
    value, 6 per edge, ``Find x_t . <think>``."""
    return 1 + 4 + 6 * (n_equations - 1) + 4


def solution_length(steps: int) -> int:
    """Tokens of a worked solution of ``steps`` steps: 4 + 8 steps + 6."""
    return 10 + 8 * steps


def decode(vocab: Vocab, ids) -> str:
    """A completion's text up to its first ``<eos>`` (excluded; ``<pad>`` and ``<bos>`` dropped), spaced as
    the module's docstring says."""
    text, prev = "", None
    for i in np.asarray(ids).tolist():
        t = vocab.tokens[i]
        if t == "<eos>":
            break
        if t in ("<pad>", "<bos>"):
            continue
        glue = prev is None or t == "." or t in _GLUED or prev in _GLUED
        text += t if glue else " " + t
        prev = t
    return text


def mentioned(text: str) -> set[int]:
    """The variables a completion mentions (their ``extract_mentioned_variables``: ``x_N`` or ``x_{N}``)."""
    return {int(n) for n in re.findall(r"x_\{?(\d+)\}?", text)}
