"""CounterFact prompts for the Mamba knockout on real checkpoints (docs/science.md §6; arXiv 2505.24244).

Nothing is downloaded: a user points at a local CounterFact file (``NeelNanda/counterfact-tracing``,
saved as JSON, JSON lines or Parquet) and at a local ``tokenizer.json``. The rules follow the
authors' code (``nirendy/mamba-knockout`` at cf8f741); each function names the file it follows.

* **Rows** (:func:`load_counterfact`): ``prompt`` (the subject is inside it, the attribute is not),
  ``subject``, ``target_true`` (with its leading space, e.g. ``" French"``) and, when present,
  ``target_false``, ``relation``, ``relation_prefix``, ``relation_suffix``, ``relation_id``. A row's
  id is ``original_idx`` when the file has it (the authors' split dataset), else its position in the
  file, which is the authors' ``original_idx`` for the Hub file
  (``src/data_ingestion/datasets/splitting.py``).
* **Tokens** (:func:`encode`): the prompt through the tokenizer with its special tokens, the target's
  first token without them, the subject's tokens found by decoding prefixes of the prompt's tokens
  (``src/data_ingestion/helpers/logits_utils.py``: ``Prompt.input_ids``, ``Prompt.true_id``,
  ``find_token_range``).
* **Evaluation** (:func:`evaluate_target`): ``p_base`` of that first token at the last position, its
  rank, and whether it is the top-1; the authors keep the prompts whose rank is 1
  (``src/experiments/runners/evaluate_model.py``, ``src/analysis/prompt_filterations.py``).

Every problem is a :class:`DataError` with one line that names the file, the record or the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

REQUIRED = ("prompt", "subject", "target_true")
OPTIONAL = ("target_false", "relation", "relation_prefix", "relation_suffix", "relation_id")
SUFFIXES = (".json", ".jsonl", ".parquet")


class DataError(ValueError):
    """A CounterFact file or a tokenizer this module cannot use; the message (one line) says why."""


@dataclass(frozen=True)
class CounterFactRow:
    """One CounterFact record. ``index``: the row's id (``original_idx`` in the authors' code).
    ``target_true`` keeps its leading space (``" French"``); the optional columns are ``""`` when the
    file lacks them."""

    index: int
    prompt: str
    subject: str
    target_true: str
    target_false: str = ""
    relation: str = ""
    relation_prefix: str = ""
    relation_suffix: str = ""
    relation_id: str = ""


class EncodedPrompt(NamedTuple):
    """A tokenized prompt. ``tokens``: int32 ``(L,)``, the prompt's ids with the tokenizer's special
    tokens (a BOS only if its post-processor adds one); ``subject``: ``(start, stop)``, the subject is
    ``tokens[start:stop]``; ``target``: the first token of ``target_true`` (leading space included)."""

    tokens: np.ndarray
    subject: tuple[int, int]
    target: int


class TargetEval(NamedTuple):
    """The model's prediction for a prompt: ``p_base`` (the softmax probability of the target token
    at the last position), ``rank`` (1 + the number of tokens with a strictly larger probability) and
    ``correct`` (``rank == 1``)."""

    p_base: float
    rank: int
    correct: bool


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _json_lines(path: Path, text: str) -> list:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not JSON ({e.msg} at column {e.colno})") from None
    return out


def _read_records(path: Path) -> list:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            try:
                import fastparquet  # noqa: F401
            except ImportError:
                raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow) or fastparquet; "
                                "neither is installed (or save the file as JSON lines)") from None
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict("records")
        except Exception as e:  # the engines' errors are of many types
            raise DataError(f"{path}: unreadable Parquet ({_one_line(e)})") from None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({_one_line(e)})") from None
    if suffix == ".jsonl":
        return _json_lines(path, text)
    try:  # .json: a list of records, or one record per line (datasets' Dataset.to_json)
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if "\n" not in text.strip():
            raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return _json_lines(path, text)
    if isinstance(data, dict):  # a JSON-lines file of one record
        return [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: a JSON {type(data).__name__}, not a list of records")
    return data


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_counterfact(path: str | Path) -> list[CounterFactRow]:
    """The records of a local CounterFact file: ``.json`` (a list of records, or the JSON lines that
    ``datasets``' ``to_json`` writes), ``.jsonl``, or ``.parquet`` (through pandas, which needs pyarrow
    or fastparquet). Columns as in ``NeelNanda/counterfact-tracing`` (the authors'
    ``src/core/names.py``, ``COLS.COUNTER_FACT``); ``prompt``, ``subject`` and ``target_true`` are
    required and must be non-empty strings, other columns are kept when listed in ``OPTIONAL`` and
    ignored otherwise. :class:`DataError` for a missing file, an unknown suffix, an unreadable or
    malformed file, missing columns, a bad value or no records."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CounterFact file")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: unknown suffix {path.suffix!r} (expected one of {', '.join(SUFFIXES)})")
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i} is a JSON {type(rec).__name__}, not an object")
    seen = set().union(*(rec.keys() for rec in records))
    absent = [c for c in REQUIRED if c not in seen]
    if absent:
        raise DataError(f"{path}: missing required column(s) {', '.join(absent)} (columns: {', '.join(sorted(seen))})")
    rows = []
    for i, rec in enumerate(records):
        fields = {}
        for col in REQUIRED + OPTIONAL:
            value = rec.get(col)
            if col in REQUIRED and (not isinstance(value, str) or not value):
                raise DataError(f"{path}: record {i}: {col} is {value!r}, not a non-empty string")
            if _missing(value):
                value = ""
            if not isinstance(value, str):
                raise DataError(f"{path}: record {i}: {col} is {value!r}, not a string")
            fields[col] = value
        index = rec.get("original_idx", i)
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise DataError(f"{path}: record {i}: original_idx is {index!r}, not an integer")
        rows.append(CounterFactRow(index=int(index), **fields))
    return rows


def load_tokenizer(path: str | Path):
    """A :class:`tokenizers.Tokenizer` from ``path``: a directory holding ``tokenizer.json`` (a
    checkpoint directory) or the file itself. :class:`DataError` when it is missing or malformed."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no tokenizer.json there" if path.is_dir() else f"{path}: no such tokenizer file")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises plain Exceptions
        raise DataError(f"{file}: not a tokenizer.json ({_one_line(e)})") from None


def check_vocab(tokenizer, vocab_size: int) -> None:
    """:class:`DataError` when the tokenizer's ids (added tokens included) do not fit a model with
    ``vocab_size`` embedding rows: a tokenizer that does not match the checkpoint. Models pad their
    vocabulary (GPT-NeoX's 50277 ids: 50280 rows in Mamba-1, 50288 in Mamba-2), so a smaller tokenizer
    passes; a smaller wrong one (GPT-2's 50257 ids) passes too."""
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise DataError(f"the tokenizer has {n} token ids but the model's vocabulary only {vocab_size}: "
                        "a tokenizer that does not match the checkpoint")


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def subject_span(tokenizer, tokens, subject: str) -> tuple[int, int]:
    """``(start, stop)``: the fewest consecutive tokens of ``tokens`` whose text covers the first
    occurrence of ``subject`` in the decoded prompt. The authors' ``find_token_range``
    (``src/data_ingestion/helpers/logits_utils.py``): decode all tokens (special tokens kept, as in
    Hugging Face's ``decode``), find ``subject`` with ``str.index``, then for ``i = 1 .. L-1`` take the
    length of the decoded prefix ``tokens[:i]``: ``start`` is ``i - 1`` for the first prefix longer
    than the subject's first character's offset, ``stop`` the first ``i`` whose prefix reaches the
    subject's end. Their loop never decodes all ``L`` tokens, so a subject that ends in the prompt's
    last token has no span (their assertion fails and the run stops); this is a :class:`DataError`
    here too. One difference: Hugging Face's ``decode`` may also apply
    ``clean_up_tokenization_spaces`` (``" ."`` -> ``"."``), which ``tokenizers`` does not; it changes
    nothing unless a space precedes ``. , ' ! ?`` in the prompt."""
    text = _decode(tokenizer, tokens)
    char = text.find(subject)
    if char < 0:
        raise DataError(f"subject {subject!r} not found in the prompt {text!r}")
    end = char + len(subject)
    start = None
    for i in range(1, len(tokens)):
        n = len(_decode(tokenizer, tokens[:i]))
        if start is None and n > char:
            start = i - 1
        if n >= end:
            return start, i
    raise DataError(f"subject {subject!r} ends in the last token of {text!r}: the authors' find_token_range "
                    "finds no span there")


def encode(tokenizer, row: CounterFactRow) -> EncodedPrompt:
    """The prompt's tokens, the subject's span and the target token, as the authors' ``Prompt``
    (``src/data_ingestion/helpers/logits_utils.py``) does with a Hugging Face tokenizer:

    * ``tokens``: ``tokenizer(prompt)``, special tokens on (``Prompt.input_ids``). Whether a BOS comes
      first is the tokenizer's post-processor's choice: the GPT-NeoX tokenizer of Mamba-1
      (``state-spaces/mamba-*-hf``) and of Mamba-2 (the authors load ``EleutherAI/gpt-neox-20b``'s,
      ``src/experiments/infrastructure/setup_models.py``) adds none, nor does GPT-2's, so token 0 (the
      knockout's ``first``) is the prompt's first word; a Llama tokenizer adds ``<s>``. Only the
      ``tokenizer.json`` is read here, so a ``tokenizer_config.json`` that switches ``add_bos_token``
      on in ``transformers`` is not followed.
    * ``subject``: :func:`subject_span` (``find_token_range``; ``get_knockout_idx`` takes
      ``range(start, stop)`` as the subject's positions).
    * ``target``: the first id of ``tokenizer(target_true, add_special_tokens=False)``
      (``Prompt.true_id``, ``true_id[:, 0]`` in ``src/experiments/runners/info_flow.py``), its leading
      space included, so for a byte-level BPE it is the token that follows the prompt (``" Luxem"`` of
      ``" Luxembourg"``). The authors drop SentencePiece's lone ``"▁"`` (id 29871) first for Llama-2
      only (``evaluate_model.py``); that is not done here.

    :class:`DataError` (naming the record) when the prompt or the target encodes to no tokens or the
    subject has no span."""
    tokens = tokenizer.encode(row.prompt).ids
    if not tokens:
        raise DataError(f"record {row.index}: the prompt {row.prompt!r} encodes to no tokens")
    try:
        span = subject_span(tokenizer, tokens, row.subject)
    except DataError as e:
        raise DataError(f"record {row.index}: {e}") from None
    target = tokenizer.encode(row.target_true, add_special_tokens=False).ids
    if not target:
        raise DataError(f"record {row.index}: target_true {row.target_true!r} encodes to no tokens")
    return EncodedPrompt(np.asarray(tokens, np.int32), span, int(target[0]))


def evaluate_target(probs, target: int) -> TargetEval:
    """``probs``: ``(V,)``, the model's next-token distribution at the prompt's last position (a softmax
    over every logit, padded rows included, as in the authors' ``evaluate_model.py``). ``p_base =
    probs[target]``; ``rank = 1 + #{v : probs[v] > p_base}`` (ties share the better rank);
    ``correct = rank == 1``. The authors' prompt sets keep the prompts with ``correct``
    (``Correctness.correct`` in ``src/analysis/prompt_filterations.py``; their ``all_correct`` preset is
    the intersection over several models) and their knockout's ``hit`` is ``p_knock == max(probs)``."""
    probs = np.asarray(probs)
    if probs.ndim != 1 or not 0 <= target < probs.shape[0]:
        raise DataError(f"target {target} is not an index of a distribution of shape {probs.shape}")
    p = probs[target]
    rank = int(np.sum(probs > p)) + 1
    return TargetEval(float(p), rank, rank == 1)
