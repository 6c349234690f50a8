"""The chains report section: test accuracy and traversal (percent, per seed) beside the talk's
numbers and the authors' committed CSVs, the gap of the one-complexity row to its ``1..c`` partner,
the tied model against the full model on the same rows, and the validation curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..experiments.chains import AUTHORS_COMMITTED, AUTHORS_SOURCE, NAME, PRESETS, TALK, Config, committed_key, talk_row
from ..runtime.overrides import as_tuples
from .common import (
    NOT_JUDGED,
    Summary,
    figure_link,
    fixed,
    latest_runs,
    listing,
    mean_pm,
    preset_overrides,
    pyplot,
    save_figure,
    tally,
)

FIGURE = "validation_curves.png"


def _span(cs) -> str:
    cs = list(cs)
    if len(cs) > 1 and cs == list(range(cs[0], cs[-1] + 1)):
        return f"{cs[0]}-{cs[-1]}"
    return ",".join(str(c) for c in cs)


def _mean_curve(a: np.ndarray) -> list:
    """Mean over seeds per epoch (seeds that stopped early hold their last value), in percent."""
    a = np.asarray(a, float)
    filled = np.where(np.isnan(a), np.nan, a)
    for s in range(a.shape[0]):
        last = np.flatnonzero(~np.isnan(a[s]))
        if len(last):
            filled[s, last[-1] + 1:] = a[s, last[-1]]
    m = np.nanmean(filled, axis=0) if np.any(~np.isnan(filled)) else np.full(a.shape[1], np.nan)
    keep = ~np.all(np.isnan(a), axis=0)
    return [None if not np.isfinite(x) else float(100 * x) for x in m[keep]]


def rows(runs) -> list[dict]:
    """One JSON-able row per stored config (its latest run) and test chain length. Runs of the
    earlier model (a fixed value matrix; configs without ``model``) are left out."""
    out = []
    fields = {f.name for f in dataclasses.fields(Config)}
    for r in latest_runs(runs):
        if "model" not in r.config:
            continue
        cfg = Config(**{k: as_tuples(v) for k, v in r.config.items() if k in fields})
        overrides = preset_overrides(r, PRESETS)
        m = r.metrics
        arrays = r.arrays()
        curve_acc, curve_trav = _mean_curve(arrays["val_accuracy"]), _mean_curve(arrays["val_traversal"])
        for t in m["tests"]:
            n = t["chain_size"]
            talk = talk_row(cfg, n)
            key = committed_key(cfg, n)
            committed = AUTHORS_COMMITTED.get(key) if key else None
            out.append({
                "experiment": NAME, "preset": r.preset or "custom", "overrides": overrides,
                "model": cfg.model, "attention": cfg.attention,
                "train": _span(cfg.train_complexities), "test": _span(t["test_complexities"]),
                "chain_size": n, "train_chain_len": cfg.chain_len_train(), "n_vertices": cfg.vertices(),
                "batch": cfg.batch, "sub_batches": cfg.sub_batches, "steps_per_epoch": cfg.steps_per_epoch,
                "epochs": cfg.epochs, "early_stop": cfg.early_stop, "seeds": m["seeds"],
                "test_accuracy": t["test_accuracy"], "traversal": t["traversal"],
                "test_accuracy_mean": t["test_accuracy_mean"], "test_accuracy_std": t["test_accuracy_std"],
                "traversal_mean": t["traversal_mean"], "traversal_std": t["traversal_std"],
                "valid_share": t["valid_share"],
                "accuracy_per_complexity": _seed_mean(t["accuracy_per_complexity"]),
                "epochs_run": m["epochs_run"], "steps_run": m["steps_run"],
                "talk_row": talk,
                "talk_accuracy": TALK[talk][0] if talk else None, "talk_traversal": TALK[talk][1] if talk else None,
                "authors_test_accuracy": list(committed["test_accuracy"][:2]) if committed else None,
                "authors_traversal": list(committed["traversal"][:2]) if committed else None,
                "authors_test_accuracy_per_seed": list(committed["test_accuracy"][2]) if committed else None,
                "authors_traversal_per_seed": list(committed["traversal"][2]) if committed else None,
                "authors_source": AUTHORS_SOURCE if committed else None,
                "curve_val_accuracy": curve_acc, "curve_val_traversal": curve_trav,
                "config": r.config,
                "wall_seconds": r.meta.get("wall_seconds"),
            })
    order = {name: i for i, name in enumerate(PRESETS)}
    out.sort(key=lambda row: (bool(row["overrides"]), order.get(row["preset"], len(order)), row["preset"],
                              row["model"], row["chain_size"]))
    _add_gap(out)
    return out


def _seed_mean(per_seed: list) -> list:
    a = np.array([[np.nan if x is None else x for x in s] for s in per_seed], float)
    m = np.nanmean(a, axis=0) if a.size and np.any(~np.isnan(a)) else np.full(a.shape[-1], np.nan)
    return [None if not np.isfinite(x) else float(x) for x in m]


def _same_but(a: dict, b: dict, *names: str) -> bool:
    """Equal configs apart from ``names``."""
    keys = (set(a) | set(b)) - set(names)
    return all(a.get(k) == b.get(k) for k in keys)


def _add_gap(rows: list[dict]) -> None:
    """Beside each row trained on one complexity ``c`` only and tested on ``c``: the per-seed gap to
    the row trained on ``1..c`` with everything else equal (budget, seeds, model, test)."""
    for r in rows:
        if "-" in r["train"] or "," in r["train"] or r["test"] != r["train"]:
            continue
        c = int(r["train"])
        ref = next((o for o in rows if o["train"] == f"1-{c}" and o["chain_size"] == r["chain_size"]
                    and _same_but(o["config"], r["config"], "train_complexities")), None)
        if ref is None:
            continue
        r["gap_reference"] = _label(ref)
        r["gap_accuracy"] = [None if a is None or b is None else a - b
                             for a, b in zip(ref["test_accuracy"], r["test_accuracy"])]
        r["gap_traversal"] = [None if a is None or b is None else a - b
                              for a, b in zip(ref["traversal"], r["traversal"])]


def tied_vs_full(rows: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs (full, tied) of rows with equal configs apart from ``model``, on the same test chain."""
    pairs = []
    for f in rows:
        if f["model"] != "full":
            continue
        for t in rows:
            if (t["model"] == "tied" and t["chain_size"] == f["chain_size"]
                    and _same_but(f["config"], t["config"], "model")):
                pairs.append((f, t))
    return pairs


def _label(r: dict) -> str:
    return r["preset"] + "".join(f" {k}={v}" for k, v in r["overrides"].items())


def _seeds(xs) -> str:
    return ", ".join(fixed(x) for x in xs)


def figures(runs, rows: list[dict], fig_dir: Path) -> list[Path]:
    """Greedy validation accuracy and traversal per epoch (mean over seeds) of every stored run."""
    seen, curves = set(), []
    for r in rows:
        label = _label(r) + f" [{r['model']}, {r['attention']}]"
        if label not in seen:
            seen.add(label)
            curves.append((label, r["curve_val_accuracy"], r["curve_val_traversal"]))
    if not curves:
        return []
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for label, acc, trav in curves:
        x = np.arange(1, len(acc) + 1)
        axes[0].plot(x, [np.nan if v is None else v for v in acc], label=label)
        axes[1].plot(x, [np.nan if v is None else v for v in trav], label=label)
    axes[0].set_title("validation accuracy (greedy, training distribution)")
    axes[1].set_title("validation chain traversal (greedy)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return [save_figure(fig, Path(fig_dir) / FIGURE)]


def markdown(rows: list[dict], out_dir: Path) -> str:
    """The chains section: one line per run and test chain length, the gap, tied vs full."""
    out = ["| preset | model | attention | train | test | n (N) | steps run per seed (batch) | test accuracy % "
           "| traversal % | per seed acc / trav | talk acc / trav | authors' committed acc / trav (per seed) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{fixed(a)}/{fixed(t)}" for a, t in zip(r["test_accuracy"], r["traversal"]))
        talk = "-" if r["talk_row"] is None else f"{fixed(r['talk_accuracy'], 0)} / {fixed(r['talk_traversal'], 0)}"
        if r["authors_test_accuracy"] is None:
            authors = "-"
        else:
            authors = (f"{mean_pm(*r['authors_test_accuracy'])} / {mean_pm(*r['authors_traversal'])} "
                       f"({_seeds(r['authors_test_accuracy_per_seed'])} / {_seeds(r['authors_traversal_per_seed'])})")
        steps = ", ".join(str(s) for s in r["steps_run"])
        out.append(
            f"| {_label(r)} | {r['model']} | {r['attention']} | {r['train']} | {r['test']} | "
            f"{r['chain_size']} ({r['n_vertices']}) | {steps} ({r['batch']}) | "
            f"{mean_pm(r['test_accuracy_mean'], r['test_accuracy_std'])} | "
            f"{mean_pm(r['traversal_mean'], r['traversal_std'])} | "
            f"{per_seed} | {talk} | {authors} |"
        )
    out.append("")
    out.append(
        "Greedy traces, as the authors test: accuracy = share of the test traces that reach a sink whose "
        "first sink is the source chain's end; traversal = share of them that walk the chain one vertex at "
        "a time; mean ± std (ddof 0, as the authors' np.std) over seeds, then per seed. 'n (N)': vertices "
        "per test chain (vertex labels in the graph). Authors' numbers: " + AUTHORS_SOURCE + "."
    )
    for r in rows:
        if "gap_accuracy" in r:
            out.append("")
            out.append(
                f"**Gap at the same budget ({', '.join(str(s) for s in r['steps_run'])} steps of {r['batch']} "
                f"episodes, seeds {r['seeds']}):** `{_label(r)}` ({r['model']}) reaches "
                f"{_seeds(r['test_accuracy'])}% accuracy and {_seeds(r['traversal'])}% traversal on complexity "
                f"{r['test']} per seed, {_seeds(r['gap_accuracy'])} and {_seeds(r['gap_traversal'])} points "
                f"below `{r['gap_reference']}`; the talk: 64% / 1% against 100% / 100%."
            )
    pairs = tied_vs_full(rows)
    if pairs:
        out += ["", "**Tied model (per-relation rates) against the full model, same rows:**", "",
                "| row | n | full acc / trav % | tied acc / trav % | full per seed | tied per seed |",
                "|---|---|---|---|---|---|"]
        for f, t in pairs:
            out.append(
                f"| {_label(f)} | {f['chain_size']} | {mean_pm(f['test_accuracy_mean'], f['test_accuracy_std'])} / "
                f"{mean_pm(f['traversal_mean'], f['traversal_std'])} | "
                f"{mean_pm(t['test_accuracy_mean'], t['test_accuracy_std'])} / "
                f"{mean_pm(t['traversal_mean'], t['traversal_std'])} | "
                + ", ".join(f"{fixed(a)}/{fixed(b)}" for a, b in zip(f["test_accuracy"], f["traversal"])) + " | "
                + ", ".join(f"{fixed(a)}/{fixed(b)}" for a, b in zip(t["test_accuracy"], t["traversal"])) + " |"
            )
    link = figure_link(Path(out_dir), Path(out_dir) / "figures" / NAME / FIGURE, "chains validation curves")
    if link:
        out += ["", link]
    out.append("")
    return "\n".join(out)


CLAIM = "An RL-trained one-layer transformer solves complexity c only if its data holds the simpler 1..c"


def _row_text(r: dict) -> str:
    star = " *" if r["overrides"] else ""
    return (f"{r['train']} → {r['test']}{star} ({r['model']}) "
            f"{fixed(r['test_accuracy_mean'])} / {fixed(r['traversal_mean'])}")


def summary(rows: list[dict]) -> Summary:
    """The summary line: per seed of each row trained on one complexity ``c`` with a ``1..c`` partner
    at the same budget (the section's gap), whether the partner is above it in both accuracy and
    traversal; ours and theirs (the talk, the authors' committed CSVs) in accuracy / traversal %."""
    results = []
    for r in rows:
        for a, t in zip(r.get("gap_accuracy") or [], r.get("gap_traversal") or []):
            results.append(None if a is None or t is None else a > 0 and t > 0)
    theirs = []
    for r in rows:
        talk = f"talk {fixed(r['talk_accuracy'], 0)} / {fixed(r['talk_traversal'], 0)}"
        known = ([talk] if r["talk_row"] else []) + (
            [f"authors' {fixed(r['authors_test_accuracy'][0])} / {fixed(r['authors_traversal'][0])}"]
            if r["authors_test_accuracy"] else [])
        if known:
            theirs.append(f"{r['train']} → {r['test']} " + ", ".join(known))
    verdict, held, judged = tally(results)
    why = (f"trained on 1..c above trained on c alone, in accuracy and traversal, in {held} of {judged} seeds "
           "(the section's gap at the same budget)" if verdict != NOT_JUDGED else
           "needs a run trained on one complexity c and its 1..c partner at the same budget")
    return Summary(CLAIM, "accuracy / traversal %: " + listing([_row_text(r) for r in rows]), listing(theirs),
                   verdict, why)
