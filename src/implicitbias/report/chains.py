"""The chains report section: accuracy and traversal beside the talk's numbers, the gap of the
one-complexity row to its ``1..c`` partner, and the learning curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..experiments.chains import NAME, PRESETS, TALK, Config
from ..overrides import as_tuples
from ..tasks.chains import smooth
from .common import figure_link, latest_runs, preset_overrides, pyplot, save_figure

FIGURE = "learning_curves.png"



def _span(cs) -> str:
    cs = list(cs)
    if len(cs) > 1 and cs == list(range(cs[0], cs[-1] + 1)):
        return f"{cs[0]}-{cs[-1]}"
    return ",".join(str(c) for c in cs)


def rows(runs) -> list[dict]:
    """One JSON-able row per stored config (the latest run of it), the talk's numbers beside it,
    learning curves downsampled to ``curve_points`` points (mean over seeds)."""
    out = []
    fields = {f.name for f in dataclasses.fields(Config)}
    for r in latest_runs(runs):
        cfg = Config(**{k: as_tuples(v) for k, v in r.config.items() if k in fields})
        preset = r.preset or "custom"
        overrides = preset_overrides(r, PRESETS)
        m = r.metrics
        arrays = r.arrays()
        reward, trav = arrays["reward"], arrays["traversal"]
        window = max(1, reward.shape[1] // 100)
        idx = np.unique(np.linspace(0, reward.shape[1] - 1, min(cfg.curve_points, reward.shape[1])).astype(int))
        talk = TALK.get(preset) if not overrides else None
        out.append({
            "experiment": NAME, "preset": preset, "overrides": overrides,
            "train": _span(cfg.train_complexities), "test": _span(cfg.test_complexities),
            "train_chain_len": cfg.chain_len("train"), "test_chain_len": cfg.chain_len("test"),
            "steps": cfg.steps, "batch": cfg.batch, "seeds": m["seeds"],
            "accuracy_mean": m["accuracy_mean"], "accuracy_std": m["accuracy_std"],
            "traversal_mean": m["traversal_mean"], "traversal_std": m["traversal_std"],
            "accuracy_per_seed": m["accuracy"], "traversal_per_seed": m["traversal"],
            "test_complexities": m["test_complexities"],
            "accuracy_per_complexity": np.mean(m["accuracy_per_complexity"], axis=0).tolist(),
            "traversal_per_complexity": np.mean(m["traversal_per_complexity"], axis=0).tolist(),
            "min_accuracy_over_complexities": float(np.min(np.mean(m["accuracy_per_complexity"], axis=0))),
            "min_traversal_over_complexities": float(np.min(np.mean(m["traversal_per_complexity"], axis=0))),
            "steps_to_reward_0.9": m["steps_to_reward_0.9"],
            "talk_accuracy": None if talk is None else talk[0], "talk_traversal": None if talk is None else talk[1],
            "curve_step": idx.tolist(),
            "curve_reward": smooth(reward, window).mean(axis=0)[idx].tolist(),
            "curve_traversal": smooth(trav, window).mean(axis=0)[idx].tolist(),
            "wall_seconds": r.meta.get("wall_seconds"),
        })
    order = {name: i for i, name in enumerate(PRESETS)}
    out.sort(key=lambda row: (bool(row["overrides"]), order.get(row["preset"], len(order)), row["preset"]))
    _add_gap(out)
    return out


def _add_gap(rows: list[dict]) -> None:
    """Beside each row trained on one complexity ``c`` only and tested on ``c``: its gap to the row
    trained on ``1..c`` tested on ``c`` with everything else equal (same budget, seeds, overrides)."""
    def rest(row):
        return {k: v for k, v in row["overrides"].items() if k != "train_complexities"}

    for r in rows:
        if "-" in r["train"] or "," in r["train"] or r["test"] != r["train"]:
            continue
        c = int(r["train"])
        ref = next((o for o in rows if o["train"] == f"1-{c}" and o["test"] == r["test"] and o["steps"] == r["steps"]
                    and o["seeds"] == r["seeds"] and o["train_chain_len"] == r["train_chain_len"]
                    and o["test_chain_len"] == r["test_chain_len"] and rest(o) == rest(r)), None)
        if ref is not None:
            r["gap_reference"] = _label(ref)
            r["gap_accuracy"] = ref["accuracy_mean"] - r["accuracy_mean"]
            r["gap_traversal"] = ref["traversal_mean"] - r["traversal_mean"]


def _label(r: dict) -> str:
    return r["preset"] + "".join(f" {k}={v}" for k, v in r["overrides"].items())


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pm(m, s) -> str:
    return f"{100 * m:.1f} ± {100 * s:.1f}%"


def figures(runs, rows: list[dict], fig_dir: Path) -> list[Path]:
    """The learning curves of every row (training reward and traversal rate, mean over seeds)."""
    if not rows:
        return []
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for r in rows:
        label = f"{r['preset']}" + (" *" if r["overrides"] else "")
        axes[0].plot(r["curve_step"], r["curve_reward"], label=label)
        axes[1].plot(r["curve_step"], r["curve_traversal"], label=label)
    axes[0].set_title("training reward (final-answer accuracy)")
    axes[1].set_title("training chain-traversal rate")
    for ax in axes:
        ax.set_xlabel("policy-gradient step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return [save_figure(fig, Path(fig_dir) / FIGURE)]


def markdown(rows: list[dict], out_dir: Path) -> str:
    """The chains section: accuracy and traversal (mean ± std over seeds, and per seed) beside the
    talk's numbers, the gap of the complexity-3-only row, and the learning curves."""
    out = ["| preset | train | test | n train/test | steps | accuracy | traversal | per seed acc / trav "
           "| min over test c (acc / trav) | talk acc / trav | steps to reward 0.9 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = _label(r)
        pairs = zip(r["accuracy_per_seed"], r["traversal_per_seed"])
        per_seed = ", ".join(f"{100 * a:.0f}/{100 * t:.0f}" for a, t in pairs)
        hits = ", ".join(str(s) if s >= 0 else "never" for s in r["steps_to_reward_0.9"])
        out.append(
            f"| {name} | {r['train']} | {r['test']} | {r['train_chain_len']}/{r['test_chain_len']} | {r['steps']} | "
            f"{_pm(r['accuracy_mean'], r['accuracy_std'])} | {_pm(r['traversal_mean'], r['traversal_std'])} | "
            f"{per_seed} | "
            f"{_pct(r['min_accuracy_over_complexities'])} / {_pct(r['min_traversal_over_complexities'])} | "
            f"{_pct(r['talk_accuracy'])} / {_pct(r['talk_traversal'])} | {hits} |"
        )
    out.append("")
    out.append(
        "Accuracy: share of sampled traces whose final answer is the start chain's terminal; traversal: share "
        "that walk the chain forward one vertex at a time; both averaged over the test complexities, then "
        "mean ± std over seeds (per seed: accuracy/traversal in %). 'n': vertices per chain. "
        "'steps to reward 0.9': first step where the 50-step mean training reward reaches 0.9, per seed."
    )
    for r in rows:
        if "gap_accuracy" in r:
            out.append("")
            out.append(
                f"**Gap at the same budget ({r['steps']} steps, seeds {r['seeds']}):** `{_label(r)}` reaches "
                f"{_pm(r['accuracy_mean'], r['accuracy_std'])} accuracy and "
                f"{_pm(r['traversal_mean'], r['traversal_std'])} traversal on complexity {r['test']}: "
                f"{100 * r['gap_accuracy']:.1f} and {100 * r['gap_traversal']:.1f} points below "
                f"`{r['gap_reference']}`."
            )
    link = figure_link(Path(out_dir), Path(out_dir) / "figures" / NAME / FIGURE, "chains learning curves")
    if link:
        out.append("")
        out.append(link)
    out.append("")
    return "\n".join(out)
