"""The real-checkpoint commands end to end (``implicitbias knockout evaluate | filter | flow | heatmap``) on a
tiny random Mamba checkpoint, tokenizer and CounterFact file written here; and their one-line refusals."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from typer.testing import CliRunner

from implicitbias.cli import app
from implicitbias.interp import info_flow as fl
from implicitbias.interp import pipeline
from implicitbias.models.checkpoints import load_lm, save_lm
from implicitbias.models.lm import make_lm
from implicitbias.tasks import counterfact as cf

WORDS = ["[UNK]", "The", "capital", "of", "Freedonia", "Sylvania", "is", "located", "in", "speaks", "a", "b", "c",
         "d", "e", "f", "g", "h"]
SUBJECTS = ["Freedonia", "Sylvania", "Freedonia", "Sylvania"]
# five tokens each: one compiled forward serves every prompt
PROMPTS = ["The capital of {} is", "{} is located in a", "a b {} speaks c", "The capital of {} is"]


def _tokenizer(path):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return cf.load_tokenizer(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-layer random Mamba-1 checkpoint, its tokenizer, and four prompts whose true target is the model's
    own top-1 for the first three (so they pass the filter) and its least likely token for the last."""
    root = tmp_path_factory.mktemp("ko")
    model_dir = root / "model"
    save_lm(make_lm("mamba1", len(WORDS), 8, 3, d_state=2, key=jax.random.PRNGKey(0)), model_dir)
    tok = _tokenizer(model_dir / "tokenizer.json")
    lm, _ = load_lm(model_dir)
    records = []
    for i, (s, p) in enumerate(zip(SUBJECTS, PROMPTS)):
        prompt = p.format(s)
        probs = np.asarray(fl.last_probs(lm, np.asarray(tok.encode(prompt).ids)))
        best = int(probs.argmax() if i < 3 else probs.argmin())
        records.append({"prompt": prompt, "subject": s, "target_true": " " + WORDS[best], "target_false": " a",
                        "relation": p, "relation_prefix": "", "relation_suffix": "", "relation_id": f"P{i}"})
    data = root / "counterfact.json"
    data.write_text(json.dumps(records))
    return root, model_dir, data, lm, tok


def _run(*args):
    return CliRunner().invoke(app, ["knockout", *map(str, args)])


@pytest.mark.slow  # 7 s; moved to make test-all to keep the fast suite under 180 s
def test_the_pipeline_runs_end_to_end_on_a_local_checkpoint(setup):
    root, model, data, lm, tok = setup
    ev = root / "eval.json"
    res = _run("evaluate", "--model", model, "--data", data, "--out", ev)
    assert res.exit_code == 0, res.output
    rows = json.loads(ev.read_text())["rows"]
    assert [r["correct"] for r in rows] == [True, True, True, False]
    assert [r["rank"] for r in rows][:3] == [1, 1, 1] and rows[3]["rank"] == len(WORDS)
    kept = root / "kept.json"
    res = _run("filter", ev, ev, "--out", kept)  # correct in "every model" of a list of two
    assert res.exit_code == 0, res.output
    assert json.loads(kept.read_text())["indices"] == [0, 1, 2]
    out = root / "flow.json"
    res = _run("flow", "--model", model, "--data", data, "--keep", kept, "--ws", 2, "--groups", "all,slow",
               "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["windows"] == 2 and result["prompts"] == 3 and set(result["groups"]) == {"all", "slow"}
    assert out.with_suffix(".png").exists()
    # the command's numbers are the library's on the same prompts
    prompts = [cf.encode(tok, r) for r in cf.load_counterfact(data)][:3]
    direct = pipeline.info_flow(lm, prompts, 2, ("subject", "relation", "last", "first"), ("all",))
    for s, stats in direct["groups"]["all"].items():
        np.testing.assert_allclose(result["groups"]["all"][s]["mean"], stats["mean"], rtol=0, atol=0)
    heat = root / "heat.json"
    res = _run("heatmap", "--model", model, "--data", data, "--index", 1, "--ws", 1, "--out", heat)
    assert res.exit_code == 0, res.output
    h = json.loads(heat.read_text())
    assert np.asarray(h["delta"]).shape == (3, len(h["tokens"])) and heat.with_suffix(".png").exists()


@pytest.mark.slow  # 4-6 s; moved to make test-all to keep the fast suite under 180 s
def test_the_pipeline_runs_the_decay_groups_together_as_each_alone(setup):
    """The flow stacks every decay group in one call per prompt; each group's numbers are those of a run of
    that group alone (a mixed-up group axis would swap them: the groups differ by far more than rounding)."""
    root, model, data, lm, tok = setup
    # no skip D, dt ~ 3, outputs x 30: the scan reaches the residual stream, so the groups differ; A_log
    # jittered per channel (at initialisation every channel has the same A, and the groups tie)
    for i, k in enumerate(jax.random.split(jax.random.PRNGKey(1), lm.n_layers)):
        mx = lm.mixers[i]
        lm = eqx.tree_at(lambda m, i=i: (m.mixers[i].D, m.mixers[i].dt_proj.bias, m.mixers[i].out_proj.weight,
                                         m.mixers[i].A_log), lm,
                         (0 * mx.D, mx.dt_proj.bias + 3, mx.out_proj.weight * 30,
                          mx.A_log + jax.random.uniform(k, mx.A_log.shape[:1], minval=-1, maxval=1)[:, None]))
    prompts = [cf.encode(tok, r) for r in cf.load_counterfact(data)][:3]
    src = ("subject", "last")
    together = pipeline.info_flow(lm, prompts, 2, src, ("all", "slow", "fast"))["groups"]
    means = {g: np.array([together[g][s]["mean"] for s in src]) for g in together}
    for g in ("slow", "fast"):
        alone = pipeline.info_flow(lm, prompts, 2, src, (g,))["groups"][g]
        # float32: a batched and an unbatched forward differ by rounding, ~1e-6 of p, so ~1e-4 points of
        # 100 (p_knock - p_base) / p_base; atol 1e-3 points
        np.testing.assert_allclose(means[g], [alone[s]["mean"] for s in src], rtol=0, atol=1e-3)
    # ten times the tolerance apart, so a swap of groups fails
    assert np.abs(means["all"] - means["slow"]).max() > 1e-2 and np.abs(means["slow"] - means["fast"]).max() > 1e-2


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "error:" in text and all(n in text for n in needles), text


def test_bad_inputs_are_refused_in_one_line(setup, tmp_path):
    root, model, data, lm, _ = setup
    out = tmp_path / "o.json"
    _one_line_error(_run("evaluate", "--model", tmp_path / "nope", "--data", data, "--out", out), "nope")
    (tmp_path / "notckpt").mkdir()
    (tmp_path / "notckpt" / "config.json").write_text("[1, 2]")
    _one_line_error(_run("evaluate", "--model", tmp_path / "notckpt", "--data", data, "--out", out), "config.json")
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    _one_line_error(_run("evaluate", "--model", other, "--data", data, "--out", out), "gpt2")
    big = tmp_path / "big"
    big.mkdir()
    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(64)} | {"[UNK]": 64}, unk_token="[UNK]"))
    t.save(str(big / "tokenizer.json"))
    _one_line_error(_run("evaluate", "--model", model, "--tokenizer", big, "--data", data, "--out", out), "65")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x", "subject": "x"}]))
    _one_line_error(_run("evaluate", "--model", model, "--data", bad, "--out", out), "target_true")
    _one_line_error(_run("flow", "--model", model, "--data", data, "--ws", 9, "--out", out), "--ws")
    _one_line_error(_run("flow", "--model", model, "--data", data, "--sources", "subject,nose", "--out", out),
                    "--sources")
    assert not out.exists()
