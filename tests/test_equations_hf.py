"""The real-LM path of the equations task (tasks/equations_hf.py, ``implicitbias equations grpo-hf | eval-hf``).

The refusals (one line, exit 2, before torch is imported) run in the fast suite without the extra. The rest
needs the rl extra (torch, transformers, trl; ``make test-rl``) and is skipped, saying so, without it: two GRPO
steps through TRL on a tiny Llama with a tokenizer built here, and the greedy accuracy of ``evaluate``.

A random model never writes ``</think>\\n<answer>...</answer>``, so every reward would be 0, every advantage 0
and nothing learned (the test could not fail for the right reason). The tiny Llama is therefore random but
for a bigram head set here: its attention and MLP outputs start at zero (o_proj, down_proj), its embedding is
the identity, so the logits depend only on the last token, and ``lm_head`` gives after ``<think>`` the well
formed ``</think>`` or a bad ``x`` with probability 1/2 each; well formed completions continue
``\\n <answer> digit </answer> eos``. GRPO must then favour ``</think>`` over ``x`` after ``<think>``.
"""

import collections
import functools
import importlib.util
import json
import math
import socket

import pytest
from typer.testing import CliRunner

from implicitbias.cli import app
from implicitbias.tasks import equations as eq
from implicitbias.tasks import equations_hf as hf

# --- the refusals: no torch needed ------------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(app, ["equations", *map(str, args)])


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0, res.output
    text = res.output.strip()
    assert text.startswith("error:") and all(n in text for n in needles), text


def _fake_model_dir(path, files=("config.json", "tokenizer.json", "model.safetensors")):
    path.mkdir()
    for f in files:
        (path / f).write_text("{}")
    return path


def test_bad_inputs_are_refused_in_one_line_without_torch(tmp_path, monkeypatch):
    out = tmp_path / "out"
    good = _fake_model_dir(tmp_path / "good")
    _one_line_error(_run("grpo-hf", "--model", tmp_path / "nope", "--out", out), "nope", "does not exist")
    _one_line_error(_run("eval-hf", "--model", tmp_path / "nope", "--out", out / "r.json"), "does not exist")
    noconf = _fake_model_dir(tmp_path / "noconf", ("tokenizer.json", "model.safetensors"))
    _one_line_error(_run("grpo-hf", "--model", noconf, "--out", out), "config.json")
    notok = _fake_model_dir(tmp_path / "notok", ("config.json", "model.safetensors"))
    _one_line_error(_run("grpo-hf", "--model", notok, "--out", out), "tokenizer")
    _one_line_error(_run("eval-hf", "--model", notok, "--out", out / "r.json"), "tokenizer")
    noweights = _fake_model_dir(tmp_path / "noweights", ("config.json", "tokenizer_config.json"))
    _one_line_error(_run("grpo-hf", "--model", noweights, "--out", out), "weights")
    _one_line_error(_run("grpo-hf", "--model", good, "--out", out, "--mixture", "1-99"), "mixture", "1-14")
    _one_line_error(_run("grpo-hf", "--model", good, "--out", out, "--group", 1), "group", ">= 2")
    _one_line_error(_run("grpo-hf", "--model", good, "--out", out, "--steps", 0), "steps")
    _one_line_error(_run("eval-hf", "--model", good, "--out", out / "r.json", "--layout", "9"), "layout")
    monkeypatch.setattr(hf, "missing_extra", lambda: ["trl"])
    _one_line_error(_run("grpo-hf", "--model", good, "--out", out), "rl extra", "trl", "make test-rl")
    _one_line_error(_run("eval-hf", "--model", good, "--out", out / "r.json"), "rl extra")
    assert not out.exists()


def test_the_config_validates_and_its_defaults_are_the_authors():
    c = hf.HFConfig()
    assert (c.steps, c.group, c.prompts_per_step, c.lr, c.scheduler, c.warmup_ratio, c.beta, c.max_prompt_length,
            c.max_completion_length, c.seed, c.n_samples, c.mixture, c.bf16) == (
        600, 8, 8, 5e-7, "cosine", 0.03, 1e-4, 512, 1024, 42, 50_000, "1-14", False)
    assert c.layout == eq.MIXTURES["1-14"]
    for bad, match in ((dict(mixture="15"), "mixture"), (dict(group=1), "group"), (dict(steps=0), "steps"),
                       (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(beta=-1.0), "beta"),
                       (dict(warmup_ratio=1.0), "warmup"), (dict(scheduler="step"), "scheduler"),
                       (dict(n_samples=5, prompts_per_step=8), "n_samples"), (dict(bf16=1), "bf16")):
        with pytest.raises(ValueError, match=match):
            hf.HFConfig(**bad)


def test_the_grpo_config_mapping_is_the_early_trl_objective():
    kw = hf.grpo_config_kwargs(hf.HFConfig(), "o", use_cpu=True)
    # 8 prompts x 8 completions per optimizer step, in trl >= 0.15's units (completions)
    assert kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"] == 64
    assert kw["num_generations"] == 8 and kw["per_device_train_batch_size"] == 8
    assert (kw["loss_type"], kw["scale_rewards"], kw["num_iterations"], kw["use_bias_correction_kl"],
            kw["use_vllm"], kw["beta"], kw["top_k"], kw["bf16"]) == ("grpo", "group", 1, False, False, 1e-4, 0, False)
    # sampled at trl 0.14's 0.9, scored at temperature 1 as 0.14 did
    assert kw["temperature"] == 1.0 and kw["generation_kwargs"] == {"temperature": 0.9}


def test_the_module_and_the_cli_import_torch_only_inside_functions():
    """torch, transformers, trl, datasets are never imported at module level (the package and its CLI load
    without the extra; checked on the source, as this process may hold torch already)."""
    import ast
    from pathlib import Path

    from implicitbias.cli import equations as cli_equations

    for mod in (hf, cli_equations):
        top = [n for n in ast.parse(Path(mod.__file__).read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not names & {"torch", "transformers", "trl", "datasets", "accelerate"}, (mod.__name__, names)


# --- the extra ------------------------------------------------------------------------------------------

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "trl"))
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="the rl extra (torch, transformers, trl) is not installed: "
                                                       "make test-rl")

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GREEDY_DIGIT = "7"


def _tokenizer():
    """A character-level tokenizer (every printable ASCII character and newline) with the chat tokens and the
    four tags as single tokens, a chat template in Qwen's layout, eos ``<|im_end|>``, pad ``<pad>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + TAGS + CHARS + ["[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens(TAGS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>",
                                   eos_token="<|im_end|>", chat_template=CHAT_TEMPLATE)


def _model(tok):
    """The tiny Llama of the module docstring (hidden size = vocabulary, one layer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    V = len(tok)
    H = 4 * math.ceil(V / 4)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=16, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=False,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg)
    ids = tok.convert_tokens_to_ids
    # log-probabilities of the next token given the last; everything else ends the completion
    table = {t: {"<|im_end|>": 0.0} for t in tok.get_vocab()}
    table["<think>"] = {"</think>": math.log(0.5) + 1e-3, "x": math.log(0.5)}  # greedy: </think>
    table["</think>"] = {"\n": 0.0}
    table["\n"] = {"<answer>": 0.0}
    table["<answer>"] = {d: (0.1 if d == GREEDY_DIGIT else 0.0) for d in "123456789"}
    table.update({d: {"</answer>": 0.0} for d in "123456789"})
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :V] = torch.eye(V)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.full((V, H), -20.0)
        for cur, nxt in table.items():
            for t, logp in nxt.items():
                head[ids(t), ids(cur)] = logp
        model.lm_head.weight.copy_(head / math.sqrt(H))  # the final norm scales the one-hot by sqrt(H)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pytest.importorskip("torch", reason="the rl extra is not installed (make test-rl installs torch)")
    pytest.importorskip("transformers", reason="the rl extra is not installed (make test-rl)")
    pytest.importorskip("trl", reason="the rl extra is not installed (make test-rl)")
    d = tmp_path_factory.mktemp("tiny") / "model"
    tok = _tokenizer()
    _model(tok).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _log_odds(path) -> float:
    """log p(``</think>``) - log p(``x``) after a prompt ending in ``<think>``, under the model saved in ``path``:
    the well formed branch against the bad one. (p(``</think>``) alone is no test: moving mass to a token
    that no completion holds leaves the GRPO surrogate unchanged to first order, as the advantages of a group
    sum to zero, and Adam's normalised step moves such directions by a full step too.)"""
    import torch
    from transformers import AutoModelForCausalLM

    tok = hf.load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    ids = tok(hf.prompt_text(tok, eq.generate(eq.MIXTURES["1-4"], 1, 7)[0].text), return_tensors="pt")
    with torch.no_grad():
        logp = model(**ids).logits[0, -1].log_softmax(-1)
    return float(logp[tok.convert_tokens_to_ids("</think>")] - logp[tok.convert_tokens_to_ids("x")])


@needs_extra
def test_the_tokenizer_round_trips_the_prompt_and_the_tags(model_dir):
    tok = hf.load_tokenizer(model_dir)
    text = hf.prompt_text(tok, eq.generate(eq.MIXTURES["1-4"], 1, 0)[0].text)
    assert text.endswith(eq.PREFILL) and "[UNK]" not in tok.decode(tok(text)["input_ids"])
    assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok.tokenize("</think>\n<answer>7</answer>")) == 5
    assert "variable  Show" in hf.prompt_text(tok, "x_1 = 2.", "eval") and "variable. Show" in text


@needs_extra
def test_two_grpo_steps_learn_the_format_offline(model_dir, tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    calls = []

    def spy(f):
        @functools.wraps(f)
        def wrapped(completions, prompts, **kw):
            calls.append((f.__name__, sorted(collections.Counter(prompts).values())))
            return f(completions, prompts=prompts, **kw)
        return wrapped

    monkeypatch.setattr(hf, "REWARD_FUNCS", tuple(spy(f) for f in hf.REWARD_FUNCS))
    # 2 prompts x 4 completions per step; lr large enough for one step to show (step 1 is the warmup: lr 0)
    config = hf.HFConfig(mixture="1-4", steps=2, group=4, prompts_per_step=2, lr=1e-2, max_prompt_length=1024,
                         max_completion_length=8, n_samples=24, gradient_checkpointing=False)
    seen = []
    metrics = hf.train(config, model_dir, tmp_path / "run", on_step=seen.append)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["n_train"] == 21 and saved["n_test"] == 3 and saved["dropped_long_prompts"] == 0
    steps = [h for h in saved["log_history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2] and [s["step"] for s in seen] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in steps)
    for h in steps:
        assert 0.0 <= h["reward"] <= 2.0
        assert 0.0 <= h["rewards/format_reward_func/mean"] <= 1.0
        assert 0.0 <= h["rewards/dag_answer_reward_func/mean"] <= 1.0
    assert any(h["reward_std"] > 0 for h in steps)  # the groups had advantages to learn from
    # one generation per optimizer step, of 2 distinct prompts x 4 completions each (the authors' layout)
    assert calls == [(f.__name__, [4, 4]) for _ in range(2) for f in hf.REWARD_FUNCS]
    assert saved["grpo_config"]["loss_type"] == "grpo" and metrics["config"]["group"] == 4
    before, after = _log_odds(model_dir), _log_odds(tmp_path / "run")
    # one Adam step of 1e-2 moves the two lm_head entries by about 1e-2 each, the logits by sqrt(H) times that
    assert abs(before - 1e-3) < 1e-4 and after > before + 0.05, (before, after)


@needs_extra
def test_the_trainer_loss_and_its_gradient_are_trl_014s(model_dir, tmp_path):
    """TRL's loss with our GRPOConfig on one micro-batch (a prompt's group of 4, completions of different
    lengths, a reference model that differs) against trl 0.14.0's formula written out here: the value and the
    gradient of every parameter. trl 1.16's defaults would not match (checked: the bias-corrected KL changes
    the gradient, loss_type "dapo" the value); the scoring temperature is checked to be 1."""
    import torch

    config = hf.HFConfig(mixture="1-4", steps=1, group=4, prompts_per_step=1, beta=0.3, max_prompt_length=1024,
                         max_completion_length=6, n_samples=12, gradient_checkpointing=False)
    trainer, info = hf.build_trainer(config, model_dir, tmp_path / "t")
    assert trainer.temperature == 1.0 and trainer.generation_config.temperature == 0.9
    tok, model = info["tokenizer"], trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1
    g = torch.Generator().manual_seed(0)
    prompt = torch.tensor(tok(hf.prompt_text(tok, eq.generate(eq.MIXTURES["1-4"], 1, 1)[0].text))["input_ids"])
    prompt_ids = prompt.repeat(4, 1)
    completion_ids = torch.randint(0, len(tok), (4, 6), generator=g)
    mask = (torch.arange(6) < torch.tensor([[6], [4], [1], [3]])).int()
    advantages = torch.tensor([1.2, -0.4, 0.3, -1.1])
    input_ids = torch.cat([prompt_ids, completion_ids], 1)

    def logps(m):  # trl 0.14's get_per_token_logps: no temperature, no attention mask (no padding)
        logits = m(input_ids).logits[:, -7:-1]
        return logits.log_softmax(-1).gather(-1, completion_ids[..., None])[..., 0]

    with torch.no_grad():
        ref = logps(model) + 0.2 * torch.randn(4, 6, generator=g)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": mask, "advantages": advantages, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    params = [p for p in model.parameters() if p.requires_grad]

    def theirs():
        lp = logps(model)
        kl = torch.exp(ref - lp) - (ref - lp) - 1
        per_token = -(torch.exp(lp - lp.detach()) * advantages[:, None] - config.beta * kl)
        return ((per_token * mask).sum(1) / mask.sum(1)).mean()

    def grads(loss):
        return [x if x is not None else torch.zeros_like(p)
                for x, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]

    expected, ours = theirs(), trainer._compute_loss(model, inputs)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads(trainer._compute_loss(model, inputs)), grads(theirs())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert sum(float(x.abs().sum()) for x in grads(theirs())) > 0.1
    # the defaults of trl 1.16 would not match: the bias-corrected KL changes the gradient
    trainer.args.use_bias_correction_kl = True
    off = grads(trainer._compute_loss(model, inputs))
    assert max(float((a - b).abs().max()) for a, b in zip(off, grads(theirs()))) > 1e-4
    trainer.args.use_bias_correction_kl = False
    trainer.loss_type = "dapo"
    assert abs(float((trainer._compute_loss(model, inputs) - expected).detach())) > 1e-4
    trainer.loss_type = "grpo"


@needs_extra
def test_greedy_accuracy_is_the_answer_the_model_writes(model_dir):
    res = hf.evaluate(model_dir, "1-4", n=12, seed=3, max_new_tokens=8, batch_size=5)
    answers = [str(i.answer) for i in eq.generate(eq.MIXTURES["1-4"], 12, 3, unique=False)]
    assert res["format_accuracy"] == 1.0 and all(r["predicted"] == GREEDY_DIGIT for r in res["results"])
    assert res["correct"] == sum(a == GREEDY_DIGIT for a in answers) and res["total"] == 12
    assert sum(s["total"] for s in res["by_steps"].values()) == 12


@needs_extra
def test_eval_hf_writes_the_result(model_dir, tmp_path):
    out = tmp_path / "r.json"
    res = _run("eval-hf", "--model", model_dir, "--out", out, "--layout", "1-4", "--n", 3, "--max-new-tokens", 6)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["format_accuracy"] == 1.0
