"""The real-LM path of the equations task (:mod:`implicitbias.tasks.equations`): GRPO on a local Hugging Face
causal LM with TRL, and the greedy test accuracy, as the authors train and test Qwen2.5-3B-Instruct
(``YuvMilo/trans-rl-experiments``, ``llm_experiments/run_r1_grpo_dag.py`` with ``configs/15-uniform.yaml``
(and its 10-, 5-uniform and 15-hard siblings), ``evaluate_model.py``).

Optional: it needs the ``rl`` extra (torch, transformers, trl; ``pip install -e '.[rl]'``, ``make test-rl``).
torch, transformers and trl are imported inside the functions, so this module imports without them;
:func:`missing_extra` names the absent ones. Nothing touches the network: the model and tokenizer are read
from a local directory (``local_files_only=True``; ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and
``HF_DATASETS_OFFLINE`` set to 1 before transformers is imported), vLLM is off, no hub push, no reports
(``report_to="none"``).

The authors' chain-era runs used trl 0.14.0 (``requirements.txt`` of that era: transformers 4.48.1,
vllm 0.7.0); the pinned trl (1.16) counts batches in completions, has a different default loss and KL
gradient, scores log-probabilities at the sampling temperature, and dropped ``max_prompt_length``.
:func:`grpo_config_kwargs` maps their settings onto it (its docstring lists every field and why); :func:`train`
builds the dataset, rewards and trainer around it. (Their later ``real_world_llm_experiments/`` moved to trl
1.2.0 with ``per_device_train_batch_size: 8`` on 8 GPUs and trl 1.2's default loss; that is not the run
reproduced here.)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.validate import require
from . import equations as eq

EXTRA = ("torch", "transformers", "trl", "datasets", "accelerate")
"""The modules the ``rl`` extra brings (datasets and accelerate come with trl)."""

TEST_LAYOUTS: dict[str, eq.Layout] = {"authors-test": eq.AUTHORS_TEST, **eq.MIXTURES}
"""Test layouts by name: their test "14" (``evaluate_model.py --chain_sizes 30 ... --min/max_path_length 14``)
and each training mixture."""

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")

TRL_014_TEMPERATURE = 0.9
"""trl 0.14.0's ``GRPOConfig.temperature`` default, which their config leaves unset (trl 1.16: 1.0)."""


def missing_extra() -> list[str]:
    """The modules of the ``rl`` extra that cannot be imported here (empty when it is installed)."""
    return [m for m in EXTRA if importlib.util.find_spec(m) is None]


def _require_extra() -> None:
    missing = missing_extra()
    if missing:
        raise ModuleNotFoundError(f"the rl extra is not installed (missing {', '.join(missing)}): "
                                  "pip install -e '.[rl]' (or make test-rl)")


# --- configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HFConfig:
    """One GRPO run; the defaults are ``configs/15-uniform.yaml`` under trl 0.14.0.

    ``steps`` (their ``max_steps: 600``), ``group`` (``num_generations: 8``), ``prompts_per_step`` (their
    ``per_device_train_batch_size: 1`` prompt x ``gradient_accumulation_steps: 8`` on one training process:
    8 prompts, 64 completions per optimizer step), ``lr`` (``learning_rate: 5.0e-7``), ``scheduler``
    (``lr_scheduler_type: cosine``), ``warmup_ratio`` (0.03), ``beta`` (KL coefficient, 0.0001),
    ``max_prompt_length`` (512), ``max_completion_length`` (1024), ``temperature`` (trl 0.14's default 0.9),
    ``seed`` (42), ``n_samples`` (``dataset_samples: 50000``, unique, split 90/10 with seed 42),
    ``mixture`` (a name of :data:`~implicitbias.tasks.equations.MIXTURES`: ``"1-14"`` is 15-uniform),
    ``bf16`` (their ``torch_dtype: bfloat16`` + ``bf16: true``; default False here, for the CPU),
    ``gradient_checkpointing`` (theirs: on, ``use_reentrant: false``).
    """

    mixture: str = "1-14"
    steps: int = 600
    group: int = 8
    prompts_per_step: int = 8
    lr: float = 5e-7
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    beta: float = 1e-4
    max_prompt_length: int = 512
    max_completion_length: int = 1024
    temperature: float = TRL_014_TEMPERATURE
    seed: int = 42
    n_samples: int = 50_000
    bf16: bool = False
    gradient_checkpointing: bool = True

    def __post_init__(self):
        require(self.mixture in eq.MIXTURES,
                f"mixture must be one of {', '.join(eq.MIXTURES)}, got {self.mixture!r}")
        for name, low in (("steps", 1), ("group", 2), ("prompts_per_step", 1), ("max_prompt_length", 1),
                          ("max_completion_length", 1), ("seed", 0), ("n_samples", 2)):
            value = getattr(self, name)
            require(type(value) is int and value >= low, f"{name} must be an integer >= {low}, got {value!r}"
                    + (" (GRPO needs two completions per prompt for an advantage)" if name == "group" else ""))
        for name in ("lr", "warmup_ratio", "beta", "temperature"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                    f"{name} must be a finite number, got {value!r}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        require(self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}, "
                f"got {self.scheduler!r}")
        for name in ("bf16", "gradient_checkpointing"):
            require(type(getattr(self, name)) is bool, f"{name} must be True or False, got {getattr(self, name)!r}")
        n_train = self.n_samples - math.ceil(0.1 * self.n_samples)
        require(n_train >= self.prompts_per_step,
                f"n_samples {self.n_samples} leaves {n_train} training prompts after the 90/10 split, fewer than "
                f"prompts_per_step {self.prompts_per_step}")

    @property
    def layout(self) -> eq.Layout:
        return eq.MIXTURES[self.mixture]


def grpo_config_kwargs(config: HFConfig, out_dir: str | Path, use_cpu: bool) -> dict:
    """The ``trl.GRPOConfig`` arguments (trl 1.16) that reproduce the authors' trl 0.14.0 run.

    Their 0.14.0 objective: advantages ``(r - mean_group) / (std_group + 1e-4)`` (Bessel std over the
    group's completions), per token ``-(exp(logp - sg(logp)) A - beta (exp(ref - logp) - (ref - logp) - 1))``,
    mean over a completion's tokens, mean over completions, one update per generated batch. Field by field:

    * ``per_device_train_batch_size = group``, ``gradient_accumulation_steps = prompts_per_step``: trl >= 0.15
      counts the per-device batch in completions, not prompts (their later trl 1.2 configs make the same
      conversion: "set per_device = num_generations * num_prompts_per_device"). ``steps_per_generation`` is
      left to its default (= gradient accumulation), so ``generation_batch_size`` = group x prompts_per_step
      (8 x 8 = 64): one generation of 8 prompts x 8 completions per optimizer step, as theirs, and the same
      8 completions per forward/backward micro-batch.
    * ``num_generations = group``; ``num_iterations = 1`` (one update per generation batch: the ratio
      ``exp(logp - old)`` is exactly 1 with the gradient of ``exp(logp - sg(logp))``, so ``epsilon`` clipping
      and ``delta`` never act).
    * ``loss_type = "grpo"``: mean over each completion's tokens, then over completions, divided by the
      accumulation steps: the mean over all 64 (trl 1.16's default "dapo" divides by the token count
      instead).
    * ``scale_rewards = "group"`` and ``multi_objective_aggregation = "sum_then_normalize"`` with no
      ``reward_weights``: format + answer summed, then ``/ (std_group + 1e-4)``.
    * ``beta``; ``use_bias_correction_kl = False``: trl 1.16 multiplies the KL term by the importance ratio by
      default, which changes its gradient even on-policy; 0.14 did not.
    * ``mask_truncated_completions = False``, ``top_entropy_quantile = 1.0``, ``entropy_coef = 0.0``,
      ``off_policy_mask_threshold = None``, ``importance_sampling_level = "token"``: 0.14 had none of these.
    * ``temperature = 1.0`` and ``generation_kwargs = {"temperature": 0.9}``: 0.14 sampled at its default
      0.9 but scored the log-probabilities of the loss (policy and reference) at temperature 1; trl 1.16
      divides the scored logits by ``temperature``, so it stays 1 and only the sampler gets 0.9.
    * the rest of the sampler: ``top_p = 1.0``, ``top_k = 0`` (off), ``min_p = None``,
      ``repetition_penalty = 1.0``: their vLLM ``SamplingParams(n, temperature, max_tokens)``; trl 1.16
      passes these explicitly, overriding the model's own generation_config. ``max_completion_length``.
    * ``use_vllm = False``: they generated with vLLM on a spare GPU; here transformers' ``generate`` samples
      the same distribution (vLLM's kernels differ in rounding only).
    * ``learning_rate``, ``lr_scheduler_type``, ``warmup_steps = warmup_ratio`` (transformers 5 reads a
      value < 1 as a ratio: ceil(600 x 0.03) = 18 steps, as 4.48's ``warmup_ratio``), ``max_steps``,
      ``seed``; AdamW, weight decay 0, ``max_grad_norm`` 1.0: the TrainingArguments defaults of both eras.
    * ``bf16`` (trl 1.16 defaults it to True; the authors' ``tf32`` is set when CUDA is there);
      ``activation_checkpointing`` with ``use_reentrant: false`` (their ``gradient_checkpointing``, the name
      transformers 5 deprecates; memory only, not the numbers).
    * ``shuffle_dataset = True`` (0.14 shuffled through the Trainer's sampler), ``remove_unused_columns =
      False`` (the rewards read ``target``), ``logging_steps = 1`` (every step's metrics; theirs logged
      every 1000), ``save_strategy = "no"`` (the model is saved once at the end), ``report_to = "none"``,
      ``push_to_hub = False``.
    * ``max_prompt_length`` is gone from GRPOConfig (0.14 cut prompts to their last 512 tokens); :func:`train`
      drops longer training prompts instead, as the authors' trl 1.2 script does, and records how many.
    """
    kw = dict(
        output_dir=str(out_dir), max_steps=config.steps, num_train_epochs=1, seed=config.seed,
        per_device_train_batch_size=config.group, gradient_accumulation_steps=config.prompts_per_step,
        num_generations=config.group, num_iterations=1, loss_type="grpo", scale_rewards="group",
        multi_objective_aggregation="sum_then_normalize", beta=config.beta, use_bias_correction_kl=False,
        mask_truncated_completions=False, top_entropy_quantile=1.0, entropy_coef=0.0,
        off_policy_mask_threshold=None, importance_sampling_level="token",
        temperature=1.0, generation_kwargs={"temperature": config.temperature}, top_p=1.0, top_k=0, min_p=None,
        repetition_penalty=1.0,
        max_completion_length=config.max_completion_length, use_vllm=False,
        learning_rate=config.lr, lr_scheduler_type=config.scheduler, warmup_steps=config.warmup_ratio,
        bf16=config.bf16, activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        shuffle_dataset=True, remove_unused_columns=False, logging_steps=1, save_strategy="no",
        report_to="none", push_to_hub=False, use_cpu=use_cpu, disable_tqdm=True,
    )
    if not use_cpu:
        kw["tf32"] = True  # theirs; ignored by the CPU
    return kw


# --- the model directory -------------------------------------------------------------------------------


class ModelDirError(ValueError):
    """A model directory that cannot be used (one line naming it)."""


class MissingModelDir(ModelDirError, FileNotFoundError):
    """The model directory does not exist."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_dir(path: str | Path) -> Path:
    """``path`` as a usable local model directory: it exists, holds ``config.json``, a tokenizer
    (``tokenizer.json`` or ``tokenizer_config.json``) and weights (safetensors or ``pytorch_model.bin``).
    One-line :class:`MissingModelDir` (a ``FileNotFoundError``) or :class:`ModelDirError` otherwise; torch
    is not imported."""
    p = Path(path)
    if not p.exists():
        raise MissingModelDir(f"model directory {p} does not exist")
    if not p.is_dir():
        raise ModelDirError(f"{p} is not a directory (give the directory that save_pretrained wrote)")
    if not (p / "config.json").is_file():
        raise ModelDirError(f"{p} has no config.json: not a Hugging Face model directory")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelDirError(f"{p} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise ModelDirError(f"{p} has no weights ({', '.join(WEIGHT_FILES)})")
    return p


def _offline_imports():
    """``(torch, transformers)`` with the hub switched off before transformers is first imported."""
    _require_extra()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    import torch
    import transformers

    return torch, transformers


def load_tokenizer(model_dir: str | Path):
    """The directory's tokenizer (local files only); the pad token is the eos token when it has none (their
    ``run_r1_grpo_dag.py`` and ``evaluate_model.py``)."""
    _, transformers = _offline_imports()
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ModelDirError(f"the tokenizer in {model_dir} has no chat template")
    return tok


def prompt_text(tokenizer, text: str, variant: str = "train") -> str:
    """The chat prompt of an instance's ``text``: :func:`~implicitbias.tasks.equations.messages` through the
    tokenizer's chat template with ``continue_final_message=True`` (their ``generate_r1_dag_prompt``), so
    the model continues the assistant turn after ``<think>``. ``variant="eval"``: the user turn of their
    ``evaluate_model.create_prompt``, which reads "target variable  Show" (no period, two spaces)."""
    require(variant in ("train", "eval"), f"variant must be 'train' or 'eval', got {variant!r}")
    msgs = eq.messages(text)
    if variant == "eval":
        msgs[1] = {**msgs[1], "content": msgs[1]["content"].replace("target variable. Show", "target variable  Show")}
    return tokenizer.apply_chat_template(msgs, tokenize=False, continue_final_message=True)


# --- rewards -------------------------------------------------------------------------------------------


def format_reward_func(completions, **kwargs) -> list[float]:
    """Their ``format_reward_func`` (TRL reward signature): :func:`~implicitbias.tasks.equations.format_reward`
    of each completion."""
    return [eq.format_reward(c) for c in completions]


def dag_answer_reward_func(completions, target, **kwargs) -> list[float]:
    """Their ``dag_answer_reward_func``: :func:`~implicitbias.tasks.equations.answer_reward` of each completion
    against its row's ``target``."""
    return [eq.answer_reward(c, t) for c, t in zip(completions, target, strict=True)]


REWARD_FUNCS = (format_reward_func, dag_answer_reward_func)
"""Their ``reward_funcs=[format_reward_func, dag_answer_reward_func]``, summed by TRL: 0, 1 or 2."""


# --- training ------------------------------------------------------------------------------------------


def build_rows(config: HFConfig, tokenizer) -> tuple[list[dict], list[dict], int]:
    """``(train, test, dropped)``: ``n_samples`` unique instances of the mixture (seed ``config.seed``), split
    90/10 by the rule of ``Dataset.train_test_split(test_size=0.1, seed=42)``, each row ``{"prompt",
    "target", "input", "steps"}``; training rows whose prompt is over ``max_prompt_length`` tokens are
    dropped (``dropped`` of them)."""
    instances = eq.generate(config.layout, config.n_samples, config.seed)
    rows = [{"prompt": prompt_text(tokenizer, inst.text), "target": str(inst.answer), "input": inst.text,
             "steps": inst.steps} for inst in instances]
    train_idx, test_idx = eq.split(len(rows), 0.1, 42)
    train = [rows[i] for i in train_idx]
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in train], add_special_tokens=False)["input_ids"]]
    kept = [r for r, n in zip(train, lengths) if n <= config.max_prompt_length]
    if len(kept) < config.prompts_per_step:
        raise ValueError(f"only {len(kept)} training prompts are within max_prompt_length "
                         f"{config.max_prompt_length} tokens (longest {max(lengths)}); raise it")
    return kept, [rows[i] for i in test_idx], len(train) - len(kept)


def build_trainer(config: HFConfig, model_dir: str | Path, out_dir: str | Path,
                  on_step: Callable[[dict], None] | None = None):
    """``(trainer, info)``: the ``trl.GRPOTrainer`` of :func:`train`, not yet run, and ``{"tokenizer",
    "kwargs", "n_train", "n_test", "dropped"}``."""
    model_dir = check_model_dir(model_dir)
    torch, transformers = _offline_imports()
    import datasets
    import trl

    tokenizer = load_tokenizer(model_dir)
    train_rows, test_rows, dropped = build_rows(config, tokenizer)
    kwargs = grpo_config_kwargs(config, out_dir, use_cpu=not torch.cuda.is_available())
    args = trl.GRPOConfig(**kwargs, model_init_kwargs={
        "dtype": "bfloat16" if config.bf16 else "float32", "local_files_only": True})

    class _Steps(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if on_step is not None and logs is not None and "loss" in logs:
                on_step({"step": state.global_step, **logs})

    trainer = trl.GRPOTrainer(
        model=str(model_dir), reward_funcs=list(REWARD_FUNCS), args=args, processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(train_rows), callbacks=[_Steps()])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # on_step reports instead
    return trainer, {"tokenizer": tokenizer, "kwargs": kwargs, "n_train": len(train_rows), "n_test": len(test_rows),
                     "dropped": dropped}


def train(config: HFConfig, model_dir: str | Path, out_dir: str | Path,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """GRPO on the local model in ``model_dir`` (their ``run_r1_grpo_dag.grpo_function``); the trained model
    and tokenizer are saved to ``out_dir`` and the metrics to ``out_dir/metrics.json``, which is returned.

    The dataset: :func:`build_rows`; the prompt is text (not chat messages), so TRL tokenises it as it is and
    the model continues after ``<think>``; the rewards :data:`REWARD_FUNCS`; the trainer
    ``trl.GRPOTrainer`` with :func:`grpo_config_kwargs` (:func:`build_trainer`). The policy and the reference
    model are both loaded from ``model_dir`` (``local_files_only``, bfloat16 when ``config.bf16`` as their
    ``torch_dtype``, else float32). ``on_step(logs)`` gets each step's logged metrics (step, loss, reward,
    kl, ...). One training process is assumed: with N processes a step holds N x ``prompts_per_step``
    prompts.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer, info = build_trainer(config, model_dir, out, on_step)
    import torch
    import transformers
    import trl

    tokenizer = info["tokenizer"]
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.config.use_cache = True
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    adds_special = tokenizer("x")["input_ids"] != tokenizer("x", add_special_tokens=False)["input_ids"]
    metrics = {
        "config": dataclasses.asdict(config), "model_dir": str(model_dir), "out_dir": str(out),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__},
        "grpo_config": {k: v for k, v in info["kwargs"].items() if k != "output_dir"},
        "n_train": info["n_train"], "n_test": info["n_test"], "dropped_long_prompts": info["dropped"],
        # trl 1.16 tokenises text prompts with add_special_tokens=True (0.14: False); the same for Qwen2.5
        "tokenizer_adds_special_tokens": bool(adds_special),
        "seconds": seconds, "log_history": trainer.state.log_history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str) + "\n")
    return metrics


# --- evaluation ----------------------------------------------------------------------------------------


def evaluate(model_dir: str | Path, layout: str | eq.Layout = "authors-test", n: int = 100, seed: int = 42,
             max_new_tokens: int = 1024, batch_size: int = 16, prompt: str = "eval", bf16: bool = False) -> dict:
    """Greedy test accuracy of the local model on ``n`` instances of ``layout`` (a :data:`TEST_LAYOUTS` name or
    a :class:`~implicitbias.tasks.equations.Layout`), their ``evaluate_model.evaluate_model``: instances not
    deduplicated (each of theirs is drawn by its own call), the prompt of their ``create_prompt``
    (``prompt="eval"``; ``"train"`` for the training prompt), batches of ``batch_size`` left-padded,
    ``generate(do_sample=False, num_beams=1, temperature/top_p/top_k=None, eos_token_id=tokenizer's)`` so the
    rest of the model's generation_config applies as in their call, the generated tokens decoded without
    special tokens; correct iff :func:`~implicitbias.tasks.equations.extract_answer` equals the answer.

    Returns ``{"accuracy", "format_accuracy", "correct", "format_correct", "total", "by_steps", "results",
    ...}`` (``by_steps``: the same per derivation length; ``results``: one row per instance)."""
    if isinstance(layout, str):
        require(layout in TEST_LAYOUTS, f"layout must be one of {', '.join(TEST_LAYOUTS)}, got {layout!r}")
        name, lay = layout, TEST_LAYOUTS[layout]
    else:
        name, lay = "custom", layout
    for what, value in (("n", n), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        require(type(value) is int and value >= 1, f"{what} must be an integer >= 1, got {value!r}")
    require(type(seed) is int and seed >= 0, f"seed must be an integer >= 0, got {seed!r}")
    require(prompt in ("eval", "train"), f"prompt must be 'eval' or 'train', got {prompt!r}")
    model_dir = check_model_dir(model_dir)
    torch, transformers = _offline_imports()

    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), local_files_only=True, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    instances = eq.generate(lay, n, seed, unique=False)
    results = []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        batch = instances[i:i + batch_size]
        enc = tokenizer([prompt_text(tokenizer, inst.text, prompt) for inst in batch], return_tensors="pt",
                        padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, use_cache=True)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for inst, completion in zip(batch, texts):
            predicted = eq.extract_answer(completion)
            results.append({"input": inst.text, "target": str(inst.answer), "steps": inst.steps,
                            "predicted": predicted, "correct": predicted == str(inst.answer),
                            "format": bool(eq.format_reward(completion)), "completion": completion})
    by_steps: dict[str, dict] = {}
    for r in results:
        s = by_steps.setdefault(str(r["steps"]), {"correct": 0, "total": 0})
        s["correct"] += r["correct"]
        s["total"] += 1
    for s in by_steps.values():
        s["accuracy"] = s["correct"] / s["total"]
    correct = sum(r["correct"] for r in results)
    fmt = sum(r["format"] for r in results)
    return {"model_dir": str(model_dir), "layout": name, "layout_fields": dataclasses.asdict(lay), "n": n,
            "seed": seed, "max_new_tokens": max_new_tokens, "prompt": prompt, "bf16": bf16,
            "accuracy": correct / n, "format_accuracy": fmt / n, "correct": correct, "format_correct": fmt,
            "total": n, "by_steps": dict(sorted(by_steps.items(), key=lambda kv: int(kv[0]))),
            "seconds": time.perf_counter() - start, "results": results}
