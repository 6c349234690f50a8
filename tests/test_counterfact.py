"""tasks/counterfact.py: CounterFact files (JSON, JSON lines, Parquet) and their refusals, local
tokenizers, and the authors' tokenization (subject span by decoded prefixes, first token of the
leading-space target, BOS only from the post-processor), on tokenizers built here."""

import json
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from implicitbias.tasks.counterfact import (
    CounterFactRow,
    DataError,
    check_vocab,
    encode,
    evaluate_target,
    load_counterfact,
    load_tokenizer,
)

RECORDS = [
    {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_true": " French", "target_false": " English", "relation": "The mother tongue of {} is",
     "relation_prefix": "The mother tongue of", "relation_suffix": " is", "relation_id": "P103",
     "target_true_id": "Q150"},
    {"prompt": "Toyota 2000GT, produced by", "subject": "Toyota 2000GT", "target_true": " Toyota",
     "target_false": " Chrysler", "relation": "{}, produced by", "relation_prefix": "",
     "relation_suffix": "{}, produced by", "relation_id": "P176"},
    {"prompt": "The native language of Olga Georges-Picot is", "subject": " Olga Georges-Picot",
     "target_true": " French", "target_false": " Russian", "relation": "The native language of {} is",
     "relation_prefix": "The native language of", "relation_suffix": " is", "relation_id": "P103"},
]

CORPUS = [
    "The mother tongue of Danielle Darrieux is French.", "Toyota 2000GT, produced by Toyota.",
    "The native language of Olga Georges-Picot is French.", "Abbey of Echternach is located in Luxembourg.",
    "Windows 2000, developed by Microsoft.", "Emmanuel Macron is a native speaker of French.",
] * 3


def _byte_bpe(bos: bool = False) -> Tokenizer:
    """A byte-level BPE like GPT-NeoX's (spaces belong to the next token); ``bos``: a post-processor
    that prepends ``<s>`` as Llama's does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def _word_level() -> Tokenizer:
    words = sorted({w for line in CORPUS for w in line.replace(".", " ").replace(",", " ").split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    _byte_bpe().save(str(path))
    return load_tokenizer(path.parent)


def _row(i: int = 0, **kw) -> CounterFactRow:
    rec = {"index": i, **{k: v for k, v in RECORDS[i].items() if k != "target_true_id"}}
    rec.update(kw)
    return CounterFactRow(**rec)


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --- files ---

def test_a_json_list_loads_every_column_the_pipeline_needs(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(RECORDS))
    rows = load_counterfact(path)
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[0] == _row(0)
    assert rows[0].target_true == " French" and rows[2].subject == " Olga Georges-Picot"


def test_the_datasets_json_lines_export_and_jsonl_load_the_same_rows(tmp_path):
    lines = "\n".join(json.dumps(r) for r in RECORDS) + "\n"
    (tmp_path / "export.json").write_text(lines)
    (tmp_path / "cf.jsonl").write_text(lines)
    (tmp_path / "list.json").write_text(json.dumps(RECORDS))
    ref = load_counterfact(tmp_path / "list.json")
    assert load_counterfact(tmp_path / "export.json") == ref == load_counterfact(tmp_path / "cf.jsonl")


def test_a_one_record_json_lines_file_is_one_row(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(RECORDS[1]) + "\n")
    assert load_counterfact(tmp_path / "one.json") == [_row(1, index=0)]


def test_original_idx_names_the_row_and_absent_optional_columns_are_empty(tmp_path):
    recs = [{"prompt": r["prompt"], "subject": r["subject"], "target_true": r["target_true"], "original_idx": 90 + i,
             "relation_prefix": None} for i, r in enumerate(RECORDS)]
    (tmp_path / "cf.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    rows = load_counterfact(tmp_path / "cf.jsonl")
    assert [r.index for r in rows] == [90, 91, 92]
    assert rows[0].relation_prefix == "" and rows[0].target_false == "" and rows[0].relation_id == ""


def test_parquet_loads_through_pandas(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (it is not a dependency)")
    import pandas as pd

    pd.DataFrame(RECORDS).to_parquet(tmp_path / "cf.parquet")
    (tmp_path / "cf.json").write_text(json.dumps(RECORDS))
    assert load_counterfact(tmp_path / "cf.parquet") == load_counterfact(tmp_path / "cf.json")


def test_parquet_without_an_engine_says_to_install_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError, installed or not
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    path = tmp_path / "cf.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError) as e:
        load_counterfact(path)
    msg = _one_line_error(e)
    assert str(path) in msg and "pip install pyarrow" in msg


@pytest.mark.parametrize("name, content, words", [
    ("absent.json", None, ["no such CounterFact file"]),
    ("cf.csv", "prompt,subject\n", ["unknown suffix", "'.csv'"]),
    ("bad.json", '[{"prompt": "x",', ["not JSON"]),
    ("bad.jsonl", json.dumps(RECORDS[0]) + "\n{oops\n", ["line 2 is not JSON"]),
    ("scalar.json", "3", ["not a list of records"]),
    ("strings.json", '["a", "b"]', ["record 0", "not an object"]),
    ("empty.json", "[]", ["no records"]),
    ("empty.jsonl", "\n\n", ["no records"]),
    ("nosubject.json", json.dumps([{"prompt": "p", "target_true": " t", "relation": "r"}]),
     ["missing required column(s) subject", "columns: prompt, relation, target_true"]),
    ("nulltarget.json", json.dumps([{**RECORDS[0]}, {**RECORDS[1], "target_true": None}]),
     ["record 1", "target_true is None"]),
    ("emptysubject.json", json.dumps([{**RECORDS[0], "subject": ""}]), ["record 0", "subject is ''"]),
    ("numbers.json", json.dumps([{**RECORDS[0], "relation_id": 103}]), ["record 0", "relation_id is 103"]),
    ("index.json", json.dumps([{**RECORDS[0], "original_idx": "7"}]), ["original_idx is '7'"]),
])
def test_a_bad_counterfact_file_is_a_one_line_data_error_naming_it(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as e:
        load_counterfact(path)
    msg = _one_line_error(e)
    assert str(path) in msg
    for w in words:
        assert w in msg


def test_a_file_that_is_not_utf8_is_a_data_error(tmp_path):
    path = tmp_path / "cf.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="unreadable"):
        load_counterfact(path)


# --- tokenizers ---

def test_a_tokenizer_loads_from_its_directory_or_its_file(tmp_path):
    _byte_bpe().save(str(tmp_path / "tokenizer.json"))
    a, b = load_tokenizer(tmp_path), load_tokenizer(tmp_path / "tokenizer.json")
    assert a.encode("Toyota 2000GT").ids == b.encode("Toyota 2000GT").ids != []


@pytest.mark.parametrize("setup, words", [
    (lambda d: d, ["no tokenizer.json there"]),
    (lambda d: d / "missing.json", ["no such tokenizer file"]),
    (lambda d: (d / "tokenizer.json").write_text("{not json") and d, ["not a tokenizer.json"]),
    (lambda d: (d / "tokenizer.json").write_text('{"model": 3}') and d / "tokenizer.json", ["not a tokenizer.json"]),
])
def test_a_missing_or_malformed_tokenizer_is_a_one_line_data_error(tmp_path, setup, words):
    path = setup(tmp_path)
    with pytest.raises(DataError) as e:
        load_tokenizer(path)
    msg = _one_line_error(e)
    assert str(path) in msg and all(w in msg for w in words)


def test_a_tokenizer_with_more_ids_than_the_model_does_not_match(bpe):
    n = bpe.get_vocab_size(with_added_tokens=True)
    check_vocab(bpe, n)
    check_vocab(bpe, n + 3)  # padded embeddings (50277 ids, 50280 rows)
    with pytest.raises(DataError) as e:
        check_vocab(bpe, n - 1)
    assert "does not match" in _one_line_error(e) and str(n) in str(e.value)


# --- encode ---

def _assert_span_is_the_subject(tok, enc, subject):
    start, stop = enc.subject
    assert 0 <= start < stop <= len(enc.tokens)
    assert subject in tok.decode(enc.tokens[start:stop].tolist())
    assert subject not in tok.decode(enc.tokens[start + 1:stop].tolist())  # the fewest tokens
    assert subject not in tok.decode(enc.tokens[start:stop - 1].tolist())


@pytest.mark.parametrize("i", [0, 1, 2])
def test_the_subject_span_decodes_to_the_subject_in_the_middle_or_at_the_start(bpe, i):
    row = _row(i)
    enc = encode(bpe, row)
    assert enc.tokens.dtype == np.int32 and enc.tokens.ndim == 1
    assert enc.tokens.tolist() == bpe.encode(row.prompt).ids  # no BOS from a GPT-NeoX-like tokenizer
    _assert_span_is_the_subject(bpe, enc, row.subject)
    if i == 1:
        assert enc.subject[0] == 0  # the subject opens the prompt
    else:
        assert enc.subject[0] > 0 and enc.subject[1] < len(enc.tokens)


def test_the_target_is_the_first_token_of_the_leading_space_target(bpe):
    row = _row(0)
    enc = encode(bpe, row)
    spaced = bpe.encode(" French", add_special_tokens=False).ids
    assert enc.target == spaced[0] and bpe.decode([enc.target]).startswith(" ")
    assert enc.target != bpe.encode("French", add_special_tokens=False).ids[0]  # the space matters
    # the authors' true_id_v2 check: the target is the token that follows the prompt
    full = bpe.encode(row.prompt + row.target_true).ids
    assert full[: len(enc.tokens)] == enc.tokens.tolist() and full[len(enc.tokens)] == enc.target


def test_a_multi_token_target_keeps_only_its_first_token(bpe):
    enc = encode(bpe, _row(1, target_true=" Toyota Motor Corporation"))
    assert enc.target == bpe.encode(" Toyota", add_special_tokens=False).ids[0]


def test_a_bos_comes_only_from_the_post_processor_and_shifts_the_span(tmp_path):
    plain, bos = _byte_bpe(), _byte_bpe(bos=True)
    for i in range(3):
        a, b = encode(plain, _row(i)), encode(bos, _row(i))
        assert b.tokens[0] == 1 and b.tokens[1:].tolist() == a.tokens.tolist()
        assert b.subject == (a.subject[0] + 1, a.subject[1] + 1) and b.target == a.target
        _assert_span_is_the_subject(bos, b, _row(i).subject)


def test_a_word_level_tokenizer_gives_whole_word_spans():
    tok = _word_level()
    enc = encode(tok, _row(0))
    assert enc.subject == (4, 6) and len(enc.tokens) == 7  # The mother tongue of [Danielle Darrieux] is
    enc = encode(tok, _row(1, prompt="Toyota 2000GT produced by"))
    assert enc.subject == (0, 2)


def test_a_subject_not_in_the_prompt_is_a_data_error_naming_the_record(bpe):
    with pytest.raises(DataError) as e:
        encode(bpe, _row(0, subject="Catherine Deneuve", index=17))
    msg = _one_line_error(e)
    assert "record 17" in msg and "'Catherine Deneuve' not found" in msg


def test_a_subject_that_ends_the_prompt_has_no_span_as_in_the_authors_code(bpe):
    with pytest.raises(DataError, match="ends in the last token"):
        encode(bpe, _row(0, prompt="The mother tongue of Danielle Darrieux"))


def test_an_empty_target_is_a_data_error(bpe):
    with pytest.raises(DataError, match="target_true"):
        encode(bpe, _row(0, target_true=""))


# --- evaluation ---

def test_the_base_probability_rank_and_top1_follow_the_authors():
    probs = np.array([0.1, 0.4, 0.2, 0.2, 0.1])
    assert evaluate_target(probs, 1) == (pytest.approx(0.4), 1, True)
    assert evaluate_target(probs, 2) == (pytest.approx(0.2), 2, False)
    assert evaluate_target(probs, 3).rank == 2  # ties share the better rank
    assert evaluate_target(probs, 0).rank == 4
    with pytest.raises(DataError):
        evaluate_target(probs, 5)
