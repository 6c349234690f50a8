"""``implicitbias knockout evaluate | filter | flow | heatmap``: the paper's pipeline on a local checkpoint
(docs/science.md §6; :mod:`implicitbias.interp.pipeline`).

Nothing is downloaded: ``--model`` is a local checkpoint directory (Hugging Face ``mamba``,
``falcon_mamba``, ``mamba2`` or the mamba_ssm layout), ``--tokenizer`` a ``tokenizer.json`` or the
directory holding it (default: the model's directory), ``--data`` a CounterFact file (JSON, JSON
lines or Parquet with the ``NeelNanda/counterfact-tracing`` columns). A missing directory, a file that
is not a checkpoint, an unknown model type, a tokenizer that does not match the model, a data file
without the columns: one line naming it, exit 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Attention knockout on a local Mamba checkpoint with CounterFact (arXiv 2505.24244).")
console = Console()
err = Console(stderr=True)

Model = Annotated[Path, typer.Option("--model", help="Local checkpoint directory (config.json + weights).")]
Data = Annotated[Path, typer.Option("--data", help="CounterFact file: .json, .jsonl or .parquet.")]
Tok = Annotated[Path | None, typer.Option("--tokenizer", help="tokenizer.json or its directory (default: --model).")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N rows of --data.")]
Out = Annotated[Path, typer.Option("--out", help="Where to write the JSON result.")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _load(model: Path, data: Path, tokenizer: Path | None, limit: int | None):
    """``(lm, rows, prompts, tokenizer)``: the checkpoint, the data rows and their encodings (one-line errors,
    exit 2)."""
    from ..models.checkpoints import load_lm
    from ..tasks import counterfact as cf

    try:
        lm, _ = load_lm(model)
        tok = cf.load_tokenizer(tokenizer if tokenizer is not None else model)
        cf.check_vocab(tok, lm.embedding.shape[0])
        rows = cf.load_counterfact(data)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"--limit must be >= 1, got {limit}")
            rows = rows[:limit]
        prompts = [cf.encode(tok, r) for r in rows]
    except ValueError as e:  # CheckpointError and DataError are ValueErrors with one line each
        _fail(str(e))
    return lm, rows, prompts, tok


def _bar():
    """A progress bar on the console: ``(context manager, on_prompt(done, total))``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    task = bar.add_task("prompts", total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _write(out: Path, obj: dict) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    console.print(f"written: {out}", highlight=False)


def _split(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if not items or bad:
        _fail(f"--{what} must be a comma-separated subset of {', '.join(allowed)}, got {text!r}")
    return items


def _indices(keep: Path | None, n: int) -> list[int]:
    if keep is None:
        return list(range(n))
    try:
        idx = json.loads(keep.read_text())["indices"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _fail(f"{keep} is not a filter result (a JSON object with 'indices'): {e}")
    bad = [i for i in idx if not (isinstance(i, int) and 0 <= i < n)]
    if bad:
        _fail(f"{keep} names rows {bad[:5]} that --data (with --limit) does not have ({n} rows)")
    return idx


@app.command()
def evaluate(model: Model, data: Data, out: Out, tokenizer: Tok = None, limit: Limit = None) -> None:
    """p_base and rank of the true target's first token at the last position, for every prompt."""
    from ..interp import pipeline

    lm, rows, prompts, _ = _load(model, data, tokenizer, limit)
    start = time.perf_counter()
    bar, tick = _bar()
    with bar:
        ev = pipeline.evaluate(lm, prompts, on_prompt=tick)
    acc = sum(e["correct"] for e in ev) / len(ev)
    console.print(f"{len(ev)} prompts, top-1 correct {100 * acc:.1f}% ({time.perf_counter() - start:.1f} s)",
                  highlight=False)
    _write(out, {"model": str(model), "data": str(data), "limit": limit, "accuracy": acc,
                 "rows": [{"index": i, "subject": r.subject, **e} for i, (r, e) in enumerate(zip(rows, ev))]})


@app.command("filter")
def filter_(evaluations: Annotated[list[Path], typer.Argument(help="evaluate results, one per model, same data.")],
            out: Out) -> None:
    """Keep the prompts that every evaluated model answers correctly (the authors' final figures)."""
    from ..interp import pipeline

    evs = []
    for path in evaluations:
        try:
            evs.append(json.loads(path.read_text())["rows"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            _fail(f"{path} is not an evaluate result (a JSON object with 'rows'): {e}")
    try:
        idx = pipeline.keep_correct(*evs)
    except ValueError as e:
        _fail(str(e))
    console.print(f"kept {len(idx)} of {len(evs[0])} prompts", highlight=False)
    _write(out, {"from": [str(p) for p in evaluations], "indices": idx})


@app.command()
def flow(model: Model, data: Data, out: Out, tokenizer: Tok = None, limit: Limit = None,
         keep: Annotated[Path | None, typer.Option("--keep", help="A filter result: only its rows.")] = None,
         ws: Annotated[int, typer.Option("--ws", help="Window size (the paper: 9).")] = 9,
         sources: Annotated[str, typer.Option("--sources", help="Source sets, comma-separated.")]
         = "subject,relation,last,first",
         groups: Annotated[str, typer.Option("--groups", help="Decay groups: all, fast, slow.")] = "all") -> None:
    """Information flow to the last token: the relative change of p(true target) per window and source set."""
    from ..interp import pipeline
    from ..interp.info_flow import POSITIONS

    srcs, grps = _split(sources, POSITIONS, "sources"), _split(groups, ("all", "fast", "slow"), "groups")
    lm, _, prompts, _ = _load(model, data, tokenizer, limit)
    if not 1 <= ws <= lm.n_layers:
        _fail(f"--ws must be in 1..{lm.n_layers} (the model's layers), got {ws}")
    chosen = [prompts[i] for i in _indices(keep, len(prompts))]
    start = time.perf_counter()
    bar, tick = _bar()
    try:
        with bar:
            result = pipeline.info_flow(lm, chosen, ws, srcs, grps, on_prompt=tick)
    except ValueError as e:
        _fail(str(e))
    result.update(model=str(model), data=str(data), seconds=time.perf_counter() - start)
    _write(out, result)
    from ..report.knockout import flow_figure

    console.print(f"written: {flow_figure(result, out.with_suffix('.png'))}", highlight=False)


@app.command()
def heatmap(model: Model, data: Data, out: Out, tokenizer: Tok = None,
            index: Annotated[int, typer.Option("--index", help="The row of --data.")] = 0,
            ws: Annotated[int, typer.Option("--ws", help="Window size.")] = 9) -> None:
    """One prompt: p_knock - p_base for the edge (last, s), each source token s and each window."""
    from ..interp import pipeline

    lm, rows, prompts, tok = _load(model, data, tokenizer, index + 1 if index >= 0 else None)
    if not 0 <= index < len(prompts):
        _fail(f"--index must be in 0..{len(prompts) - 1}, got {index}")
    if not 1 <= ws <= lm.n_layers:
        _fail(f"--ws must be in 1..{lm.n_layers} (the model's layers), got {ws}")
    result = {**pipeline.heatmap(lm, prompts[index], ws), "model": str(model), "data": str(data), "index": index,
              "prompt": rows[index].prompt, "token_text": [tok.decode([t]) for t in prompts[index].tokens]}
    _write(out, result)
    from ..report.knockout import heatmap_figure

    console.print(f"written: {heatmap_figure(result, out.with_suffix('.png'))}", highlight=False)
