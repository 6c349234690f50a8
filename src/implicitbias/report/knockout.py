"""The Mamba-knockout report section (arXiv 2505.24244, the tiny models trained here) and the figures of
the real-checkpoint commands: information flow to the last token per source set and window, the decay
groups, the window-size ablation and one prompt's heatmap. Curves are means over seeds of the per-seed
means over prompts, with the 95% t interval over seeds as a band (seeds are replications, not pooled)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments.knockout import NAME
from .common import NOT_JUDGED, Summary, figure_link, latest_runs, listing, pyplot, save_figure, tally

CLAIM = "knocking out the subject's edges to the last token lowers p(true attribute), in middle-to-late layers"
PAPER = ("Mamba-1/Mamba-2 130M, ws 9 of 24, subject -> last: a drop in middle-to-late windows (their 8-prompt "
         "test: -61% / -57%); GPT-2 -92..-99%")


def rows(runs) -> list[dict]:
    """One row per stored config (its latest run): the model, its training, and the knockout results."""
    out = []
    for r in latest_runs(runs):
        m, c = r.metrics, r.config
        ps = m["per_seed"]
        out.append({
            "experiment": NAME, "preset": r.preset or "custom", "kind": c["kind"], "n_layers": c["n_layers"],
            "d_model": c["d_model"], "ws": c["ws"], "seeds": m["seeds"], "sources": c["sources"],
            "parameters": ps[0]["parameters"], "steps": c["steps"],
            "accuracy": [p["accuracy"] for p in ps], "p_median": [p["p_median"] for p in ps],
            "train_seconds": [p["train_seconds"] for p in ps], "prompts_correct": [p["prompts_correct"] for p in ps],
            "knockout_seconds": [p.get("knockout_seconds") for p in ps],
            "flow": m["across_seeds"], "per_seed_flow": [p.get("flow") for p in ps],
            "ablation": [p.get("ablation") for p in ps], "wall_seconds": r.meta.get("wall_seconds"),
        })
    out.sort(key=lambda row: (row["preset"].split("/")[0], row["kind"]))
    return out


def strongest(curve: list) -> tuple[int, float]:
    """``(window start, mean)`` of the most negative mean of a curve over windows."""
    vals = np.array([np.nan if v is None else v for v in curve], float)
    if not np.isfinite(vals).any():
        return -1, float("nan")
    i = int(np.nanargmin(vals))
    return i, float(vals[i])


def _band(ax, x, stats: dict, label: str, **kw):
    mean = np.array([np.nan if v is None else v for v in stats["mean"]], float)
    half = np.array([np.nan if v is None else v for v in stats["half_width"]], float)
    line = ax.plot(x, mean, marker="o", ms=3, label=label, **kw)[0]
    ok = np.isfinite(half)
    if ok.any():
        ax.fill_between(x[ok], (mean - half)[ok], (mean + half)[ok], alpha=0.2, color=line.get_color())


def figures(runs, rows_: list[dict], fig_dir: Path) -> list[Path]:
    """Per stored config: (a) info flow per source (decay group ``all``), (b) the subject's flow per decay
    group, (c) the window-size ablation (subject -> last, seed means), (d) seed 0's heatmap."""
    plt = pyplot()
    paths = []
    by_dir = {r.path.name: r for r in latest_runs(runs)}
    for row, run in zip(rows_, by_dir.values()):
        fig, axes = plt.subplots(1, 4, figsize=(19, 4))
        x = np.arange(len(row["flow"]["all"][row["sources"][0]]["mean"]))
        for s in row["sources"]:
            _band(axes[0], x, row["flow"]["all"][s], s)
        axes[0].set_title(f"info flow to the last token, ws {row['ws']}")
        for g, stats in row["flow"].items():
            _band(axes[1], x, stats["subject"], {"all": "all knocked out", "fast": "fastest third exempt",
                                                  "slow": "slowest third exempt"}[g])
        axes[1].set_title("subject -> last, decay groups")
        for ws in (row["ablation"][0] or {}):
            curves = np.array([a[ws]["mean"] for a in row["ablation"] if a], float)
            axes[2].plot(np.arange(curves.shape[1]), curves.mean(0), marker="o", ms=3, label=f"ws {ws}")
        axes[2].set_title("subject -> last, window sizes (mean over seeds)")
        for ax in axes[:3]:
            ax.set_xticks(x)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xlabel("first layer of the window")
            ax.set_ylabel("relative change of p(true) [%]")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        arrays = run.arrays()
        key = f"seed{row['seeds'][0]}_heatmap"
        if key in arrays:
            _heat(axes[3], arrays[key], _roles(run.config))
        fig.suptitle(f"{row['preset']}: {row['kind']}, {row['n_layers']} layers, {row['parameters']:,} parameters, "
                     f"seeds {row['seeds']}; bands: 95% t interval over seeds", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, Path(fig_dir) / f"{row['preset'].replace('/', '_')}.png"))
    return paths


def _roles(c: dict) -> list[str]:
    """A recall prompt's token roles (``BOS``, ``subject``, ``filler``, ``template``; the last is ``last``)."""
    roles = ["BOS"] + ["subject"] * c["subject_len"] + ["filler"] * c["gap"] + ["template"] * c["template_len"]
    return [f"{i} {r}" for i, r in enumerate(roles[:-1])] + [f"{len(roles) - 1} last"]


def _heat(ax, delta: np.ndarray, labels: list[str]) -> None:
    lim = float(np.abs(delta).max()) or 1.0
    im = ax.imshow(delta.T, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(delta.shape[0]))
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("first layer of the window")
    ax.set_ylabel("source token")
    ax.set_title("one prompt: p_knock - p_base, edge (last, s)")
    ax.figure.colorbar(im, ax=ax)


def flow_figure(result: dict, path: Path) -> Path:
    """The ``implicitbias knockout flow`` result as curves: one panel per decay group, one curve per source."""
    groups = result["groups"]
    fig, axes = pyplot().subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, (g, per_source) in zip(axes[0], groups.items()):
        for s, stats in per_source.items():
            _band(ax, np.arange(result["windows"]), stats, s)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"group {g}: ws {result['ws']}, {result['prompts']} prompts")
        ax.set_xlabel("first layer of the window")
        ax.set_ylabel("relative change of p(true) [%]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def heatmap_figure(result: dict, path: Path) -> Path:
    """The ``implicitbias knockout heatmap`` result: windows x source tokens."""
    fig, ax = pyplot().subplots(figsize=(7, 0.3 * len(result["tokens"]) + 2))
    _heat(ax, np.asarray(result["delta"]), result.get("token_text") or [str(t) for t in result["tokens"]])
    fig.tight_layout()
    return save_figure(fig, path)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.1f}%"


def markdown(rows_: list[dict], out_dir: Path) -> str:
    """Per stored config: training (accuracy, p_base, time), then per source and decay group the strongest
    window with its mean and interval over seeds, the per-seed values, and the figure."""
    out = []
    fig_dir = Path(out_dir) / "figures" / NAME
    for r in rows_:
        out.append(f"### {r['preset']}\n")
        out.append(f"{r['kind']}, {r['n_layers']} layers, d_model {r['d_model']}, {r['parameters']:,} parameters, "
                   f"{r['steps']} steps; per seed {r['seeds']}: accuracy "
                   f"{', '.join(f'{100 * a:.1f}%' for a in r['accuracy'])}, median p_base "
                   f"{', '.join(f'{p:.2f}' for p in r['p_median'])}, training "
                   f"{', '.join(f'{t:.0f}' for t in r['train_seconds'])} s, prompts kept "
                   f"{', '.join(str(k) for k in r['prompts_correct'])}.\n")
        out.append("| group | source | strongest window (first layer) | mean over seeds ± 95% | per seed |")
        out.append("|---|---|---|---|---|")
        for g, per_source in r["flow"].items():
            for s, stats in per_source.items():
                w, mean = strongest(stats["mean"])
                if w < 0:
                    continue
                half = stats["half_width"][w]
                seeds = [f for f in r["per_seed_flow"] if f]
                vals = ", ".join(_pct(f[g][s]["mean"][w]) for f in seeds)
                ci = "" if half is None or not math.isfinite(half) else f" ± {half:.1f}"
                out.append(f"| {g} | {s} | {w} | {mean:+.1f}%{ci} | {vals} |")
        out.append("")
        link = figure_link(Path(out_dir), fig_dir / f"{r['preset'].replace('/', '_')}.png", r["preset"])
        if link:
            out.append(link + "\n")
    out.append("Relative change: 100 (p_knock - p_base) / p_base of the true attribute at the last position, mean "
               "over the prompts a seed's model answers correctly; then over seeds (t interval over seeds). "
               "Groups: 'fast' / 'slow' exempt the fastest / slowest-decaying third of channels (Mamba-1) or heads "
               "(Mamba-2) from the knockout. 'filler' (the gap tokens) is ours; the rest are the authors' sets.\n")
    return "\n".join(out)


def summary(rows_: list[dict]) -> Summary:
    """Per stored config, two judged results: the subject's strongest window (most negative mean over
    seeds, decay group ``all``) is a drop whose 95% interval over seeds excludes 0, and that window
    starts in the later two thirds of the windows (``start >= n_windows / 3``: "middle-to-late")."""
    results, ours = [], []
    for r in rows_:
        stats = r["flow"]["all"].get("subject")
        if stats is None:
            continue
        w, m = strongest(stats["mean"])
        if w < 0:
            continue
        half = stats["half_width"][w]
        n_w = len(stats["mean"])
        results.append(None if half is None or not math.isfinite(half) else m + half < 0)
        results.append(w >= n_w / 3)
        ci = "" if half is None or not math.isfinite(half) else f" ± {half:.0f}"
        ours.append(f"{r['kind']} {r['n_layers']}L: subject {m:+.0f}%{ci} at window {w} of {n_w}")
    verdict, held, judged = tally(results)
    why = (f"{held} of {judged} hold (per model: the subject's strongest drop excludes 0 over seeds; its window "
           "in the later two thirds)" if verdict != NOT_JUDGED else "no stored run with a subject knockout")
    return Summary(CLAIM, listing(ours), PAPER, verdict, why)
