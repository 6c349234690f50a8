"""``implicitbias equations grpo-hf | eval-hf``: the equations task on a local Hugging Face LM
(:mod:`implicitbias.tasks.equations_hf`; the authors' ``run_r1_grpo_dag.py`` and ``evaluate_model.py``).

Nothing is downloaded: ``--model`` is a local directory that ``save_pretrained`` wrote (config.json,
weights, tokenizer with a chat template). Needs the ``rl`` extra (torch, transformers, trl). Bad input
(a missing model directory, no config.json or tokenizer, an unknown mixture or layout, a group of 1,
the extra not installed): one line ``error: ...``, exit 2, before torch is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The equations task (GRPO, test accuracy) on a local Hugging Face LM; needs the rl extra.")
console = Console()
err = Console(stderr=True)

Model = Annotated[Path, typer.Option("--model", help="Local model directory (config.json, weights, tokenizer).")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _ready(model: Path):
    """The task module, once ``model`` is a usable directory and the extra is installed (else one line, exit 2)."""
    from ..tasks import equations_hf as hf

    try:
        hf.check_model_dir(model)
    except ValueError as e:
        _fail(str(e))
    missing = hf.missing_extra()
    if missing:
        _fail(f"the rl extra is not installed (missing {', '.join(missing)}): pip install -e '.[rl]' "
              "(or make test-rl)")
    return hf


def _write(out: Path, obj: dict) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=1) + "\n")
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    console.print(f"written: {out}", highlight=False)


@app.command("grpo-hf")
def grpo_hf(
    model: Model,
    out: Annotated[Path, typer.Option("--out", help="Directory for the trained model and metrics.json.")],
    mixture: Annotated[str, typer.Option("--mixture", help="Training mixture: 1-14, 1-9, 1-4 or 14.")] = "1-14",
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps (theirs: 600).")] = 600,
    group: Annotated[int, typer.Option("--group", help="Completions per prompt (num_generations).")] = 8,
    prompts: Annotated[int, typer.Option("--prompts-per-step", help="Prompts per optimizer step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine, 3% warmup).")] = 5e-7,
    beta: Annotated[float, typer.Option("--beta", help="KL coefficient.")] = 1e-4,
    max_prompt: Annotated[int, typer.Option("--max-prompt-length", help="Longer training prompts are dropped.")]
    = 512,
    max_completion: Annotated[int, typer.Option("--max-completion-length", help="Tokens per completion.")] = 1024,
    n_samples: Annotated[int, typer.Option("--n-samples", help="Unique instances before the 90/10 split.")]
    = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Data and training seed.")] = 42,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 weights and autocast (a GPU).")]
    = False,
) -> None:
    """GRPO with TRL on --model, the authors' 15-uniform settings by default (run_r1_grpo_dag.py)."""
    from ..tasks.equations_hf import HFConfig

    try:
        config = HFConfig(mixture=mixture, steps=steps, group=group, prompts_per_step=prompts, lr=lr, beta=beta,
                          max_prompt_length=max_prompt, max_completion_length=max_completion,
                          n_samples=n_samples, seed=seed, bf16=bf16)
    except ValueError as e:
        _fail(str(e))
    hf = _ready(model)

    def tick(logs: dict) -> None:
        console.print(f"step {logs['step']}/{steps}  loss {logs.get('loss', float('nan')):.4g}  "
                      f"reward {logs.get('reward', float('nan')):.3f}  kl {logs.get('kl', float('nan')):.3g}",
                      highlight=False)

    try:
        metrics = hf.train(config, model, out, on_step=tick)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{metrics['n_train']} training prompts ({metrics['dropped_long_prompts']} over "
                  f"{max_prompt} tokens dropped), {metrics['seconds']:.1f} s", highlight=False)
    console.print(f"written: {out} (model) and {out / 'metrics.json'}", highlight=False)


@app.command("eval-hf")
def eval_hf(
    model: Model,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON result.")],
    layout: Annotated[str, typer.Option("--layout", help="authors-test (their test 14) or a mixture name.")]
    = "authors-test",
    n: Annotated[int, typer.Option("--n", help="Test instances.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Test-set seed.")] = 42,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per answer.")] = 1024,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call.")] = 16,
    prompt: Annotated[str, typer.Option("--prompt", help="eval (their evaluate_model.py text) or train.")]
    = "eval",
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 weights.")] = False,
) -> None:
    """Greedy test accuracy of --model (evaluate_model.py): extract_answer equal to the answer."""
    from ..tasks.equations_hf import TEST_LAYOUTS

    if layout not in TEST_LAYOUTS:
        _fail(f"--layout must be one of {', '.join(TEST_LAYOUTS)}, got {layout!r}")
    if prompt not in ("eval", "train"):
        _fail(f"--prompt must be eval or train, got {prompt!r}")
    for what, value in (("--n", n), ("--max-new-tokens", max_new_tokens), ("--batch-size", batch_size)):
        if value < 1:
            _fail(f"{what} must be >= 1, got {value}")
    hf = _ready(model)
    try:
        result = hf.evaluate(model, layout, n, seed, max_new_tokens, batch_size=batch_size, prompt=prompt, bf16=bf16)
    except ValueError as e:
        _fail(str(e))
    console.print(f"{layout}: accuracy {100 * result['accuracy']:.1f}% ({result['correct']}/{result['total']}), "
                  f"format {100 * result['format_accuracy']:.1f}% ({result['seconds']:.1f} s)", highlight=False)
    _write(out, result)
