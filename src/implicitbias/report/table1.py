"""Table 1's report section: each cell's errors beside the paper's numbers, the with/without ratio,
and per GD cell the error against the updates after the fit (where "the" number is read)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from ..experiments import table1
from ..runtime.overrides import as_tuples, base_preset
from .common import (
    Summary,
    figure_link,
    fmt,
    latest_runs,
    listing,
    preset_overrides,
    pyplot,
    save_figure,
    special_partner_key,
    tally,
)

NAME = table1.NAME


def stored_config(config: dict) -> table1.Config:
    """The config of a stored run (fields an older version stored and this one lacks are dropped)."""
    names = {f.name for f in dataclasses.fields(table1.Config)}
    return table1.Config(**{k: as_tuples(v) for k, v in config.items() if k in names})


def rows(runs) -> list[dict]:
    """One row per stored config (its latest run), the paper's numbers beside it, and for each cell
    without special sequences whether its partner with them (same preset cell, same overrides or
    sweep point) has a larger mean error."""
    out = []
    for r in latest_runs(runs):
        cfg = stored_config(r.config)
        m = r.metrics
        diverged = _diverged(m)
        out.append({
            "experiment": NAME, "preset": r.preset or "custom", "setting": cfg.setting, "L": cfg.L, "d": cfg.d,
            "special": cfg.special, "mean": m["error_mean"], "std": m["error_std"], "per_seed": m["error"],
            "seeds": m["seeds"], **table1.paper_value(cfg), "overrides": preset_overrides(r, table1.PRESETS),
            "reached_eps": m.get("reached_eps", m.get("solved")), "diverged": diverged, "n_diverged": sum(diverged),
            "train_loss": m.get("train_loss"), "wall_seconds": r.meta.get("wall_seconds"),
            # GD cells: where "error" was read (updates after the fit) and the error after all extra_steps
            "measured_update": None if cfg.setting == "per_theorem" else cfg.measured_update,
            "extra_steps": None if cfg.setting == "per_theorem" else cfg.extra_steps,
            "error_end": m.get("error_end"), "path": str(r.path),
        })
    order = {name: i for i, name in enumerate(table1.PRESETS)}
    out.sort(key=lambda row: (bool(row["overrides"]), order.get(row["preset"], len(order)), row["preset"]))
    partners = {special_partner_key(o["preset"], {k: v for k, v in o["overrides"].items() if k != "special"}): o
                for o in out if o["special"]}
    for row in out:
        if row["special"]:
            continue
        partner = partners.get(special_partner_key(row["preset"], row["overrides"]))
        if partner is None:
            continue
        if row["n_diverged"] or partner["n_diverged"]:
            # a mean without the diverged seeds is not the cell's: the ordering is not judged
            row["ordering_holds"] = partner["ordering_holds"] = None
            row["ordering_undecided"] = partner["ordering_undecided"] = "diverged seeds"
            continue
        ratio = partner["mean"] / row["mean"] if row["mean"] > 0 else None
        row["ratio_with_over_without"] = partner["ratio_with_over_without"] = ratio
        row["ordering_holds"] = partner["ordering_holds"] = None if ratio is None else bool(ratio > 1)
        if ratio is None:
            row["ordering_undecided"] = partner["ordering_undecided"] = "zero error without special sequences"
    return out


def _diverged(m: dict) -> list[bool]:
    """Per seed: training diverged or the error is not a finite number (stored as null, or as NaN by an
    older version)."""
    flags = m.get("diverged") or [False] * len(m["error"])
    return [bool(d) or e is None or not math.isfinite(e) for d, e in zip(flags, m["error"])]


def _label(row) -> str:
    return row["preset"] + "".join(f" {k}={v}" for k, v in row["overrides"].items())


def _file(row) -> str:
    """A file name for a cell pair: its label without ``/special``, every character outside
    ``[A-Za-z0-9._-]`` (slashes, spaces, brackets of list values) made ``_``, ``=`` made ``-``."""
    label = row["preset"].removesuffix("/special") + "".join(f" {k}={v}" for k, v in row["overrides"].items())
    return re.sub(r"[^A-Za-z0-9._-]", "_", label.replace("=", "-"))


def _after_fit_panel(ax, run, row, title: str) -> None:
    """Every seed's logged error against the updates after its fit (log rows at or after the hit),
    a dot where ``error`` was read and a cross at the end."""
    arrays, m = run.arrays(), run.metrics
    for s, hit in enumerate(m["hit_step"]):
        if hit < 0:  # never fitted: no "after the fit"
            continue
        steps, err = arrays["log_steps"][s], arrays["log_error"][s]
        ok = (steps >= hit) & np.isfinite(err)
        color = f"C{s}"
        ax.plot(steps[ok] - hit, err[ok], color=color, lw=1, label=f"seed {m['seeds'][s]}")
        ax.plot(m["measured_step"][s] - hit, m["error"][s], "o", color=color, ms=4)
        ax.plot(m["steps"][s] - hit, m["error_end"][s], "x", color=color, ms=5)
    ax.axvline(row["measured_update"], color="k", ls=":", lw=1)
    ax.axvline(row["extra_steps"], color="0.5", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"updates after the fit (dotted: read at {row['measured_update']}; "
                  f"dashed: end, {row['extra_steps']})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def figures(runs, rows: list[dict], fig_dir) -> list[Path]:
    """Per GD cell stored without and with special sequences: the error against the updates after
    the fit, the two side by side (``<cell>__after_fit.png`` under ``fig_dir``). Returns the paths."""
    by_path = {str(r.path): r for r in latest_runs(runs)}
    partners = {special_partner_key(o["preset"], {k: v for k, v in o["overrides"].items() if k != "special"}): o
                for o in rows if o["special"]}
    written = []
    for row in rows:
        if row["special"] or row["measured_update"] is None or row["error_end"] is None:
            continue
        partner = partners.get(special_partner_key(row["preset"], row["overrides"]))
        if partner is None or partner["error_end"] is None:
            continue
        if not any(h >= 0 for r in (row, partner) for h in by_path[r["path"]].metrics["hit_step"]):
            continue  # no seed fitted: nothing happens "after the fit"
        fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.6), sharey=True, constrained_layout=True)
        _after_fit_panel(axes[0], by_path[row["path"]], row, f"{_label(row)}: without special")
        _after_fit_panel(axes[1], by_path[partner["path"]], partner, f"{_label(partner)}: with special")
        axes[0].set_ylabel("generalization error")
        written.append(save_figure(fig, Path(fig_dir) / f"{_file(row)}__after_fit.png", dpi=80))
    return written


def _fit(row) -> str:
    fit = row.get("reached_eps")
    if fit is None:
        return "-"
    return "yes" if all(fit) else f"**{sum(fit)}/{len(fit)}**"


def _at_end(row) -> str:
    end = [e for e, d in zip(row.get("error_end") or [], row["diverged"]) if not d]
    return "-" if not end else fmt(float(np.mean(end)))


def _mean(row) -> str:
    n, k = row["n_diverged"], len(row["diverged"])
    if n == k:
        return "**the seed diverged**" if k == 1 else f"**all {k} seeds diverged**"
    text = f"{fmt(row['mean'])} ± {fmt(row['std'])}"
    return text + (f" (**{n} of {k} seeds diverged**, left out)" if n else "")


def markdown(rows: list[dict], out_dir=None) -> str:
    """The Table 1 section: each cell's mean ± std and per-seed errors beside the paper's numbers,
    the with/without ratio, and how many seeds fit their training data."""
    out = ["| preset | special | error mean ± std | per seed | at end | paper | authors' re-run | with/without | "
           "ordering | fit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["preset"] + ("".join(f" {k}={v}" for k, v in r["overrides"].items()) if r["overrides"] else "")
        ratio = r.get("ratio_with_over_without")
        order = r.get("ordering_holds")
        order_text = ("holds" if order else "FAILS") if order is not None else (
            f"not judged ({r['ordering_undecided']})" if r.get("ordering_undecided") else "-")
        per_seed = ", ".join("diverged" if d else fmt(v) for v, d in zip(r["per_seed"], r["diverged"]))
        out.append(
            f"| {name} | {'yes' if r['special'] else 'no'} | {_mean(r)} | "
            f"{per_seed} | {_at_end(r)} | {fmt(r.get('paper'))} | "
            f"{fmt(r.get('authors_rerun'))} | "
            f"{'-' if ratio is None else f'{ratio:.1f}x'} | "
            f"{order_text} | "
            f"{_fit(r)} |"
        )
    out.append("")
    out.append(
        "'paper': the paper's headline number for the setting (mean over 4 seeds); 'authors' re-run': the "
        "authors' procedure per size: re-run for the per-Theorem cells (docs/science.md §2a), the mean their notebook "
        "printed for the GD cells. 'fit': seeds whose train loss reached the cell's "
        "eps (for gradient flow: at t_final). GD cells read 'error' where the authors' notebooks read the "
        "number they print: after the post-fit logging callback's last entry (`measure_at`; 1401 of 1500, "
        "4901 of 5000 updates after the train loss first reached eps); 'at end': the mean after all "
        "`extra_steps`.\n"
    )
    unfit = [r for r in rows if r.get("reached_eps") is not None and not all(r["reached_eps"])]
    for r in unfit:
        losses = r.get("train_loss") or []
        out.append(
            f"**Not fitted:** {r['preset']} {r['overrides'] or ''}: {len(r['reached_eps']) - sum(r['reached_eps'])} "
            f"of {len(r['reached_eps'])} seeds ended with train loss above eps (final losses "
            f"{', '.join(fmt(v) for v in losses)}); their errors measure a model that never left its "
            "plateau, not the implicit bias of a fitted one.\n"
        )
    if out_dir is not None:
        links = [
            figure_link(Path(out_dir), Path(out_dir) / "figures" / NAME / f"{_file(r)}__after_fit.png",
                        f"{_label(r)}: error after the fit")
            for r in rows if not r["special"] and r.get("measured_update") is not None
        ]
        if any(links):
            out.append("### Error against updates after the fit (GD cells)\n")
            out.append("Where the reported error is read changes it while the model still moves: each line is a "
                       "seed's logged error, the dot the value in the table, the cross the value at the end.\n")
            out.extend(f"{link}\n" for link in links if link)
    return "\n".join(out)


CLAIM = "Special sequences in the training data raise the generalization error (with > without)"


def _short(row) -> str:
    """The cell's preset without ``/special``, ``*`` when it carries overrides (fewer seeds...)."""
    return row["preset"].removesuffix("/special") + (" *" if row["overrides"] else "")


def _x(with_, without) -> str:
    return "-" if with_ is None or without is None or without <= 0 else f"{with_ / without:.3g}x"


def summary(rows: list[dict]) -> Summary:
    """The summary line: per cell pair (without and with special sequences) the table's ordering
    verdict; ours the ratio with/without, theirs the ratios of the paper's and the authors' numbers."""
    partners = {special_partner_key(o["preset"], {k: v for k, v in o["overrides"].items() if k != "special"}): o
                for o in rows if o["special"]}
    ours, theirs, results, unpaired, variants = [], [], [], 0, []
    for row in rows:
        if row["special"]:
            continue
        partner = partners.get(special_partner_key(row["preset"], row["overrides"]))
        if partner is None:
            unpaired += 1
            continue
        ratio = row.get("ratio_with_over_without")
        shown = (f"{_short(row)} {'-' if ratio is None else f'{ratio:.3g}x'}"
                 + (f" ({row['ordering_undecided']})" if row.get("ordering_undecided") else ""))
        if base_preset(row["preset"]) in table1.VARIANTS:  # our choices beside the defaults: shown, not judged
            variants.append(shown + ("" if row.get("ordering_holds") else " (fails)"))
            continue
        results.append(row.get("ordering_holds"))
        ours.append(shown)
        known = [f"paper {_x(partner.get('paper'), row.get('paper'))}" if row.get("paper") else "",
                 f"authors' {_x(partner.get('authors_rerun'), row.get('authors_rerun'))}"
                 if row.get("authors_rerun") else ""]
        if any(known):
            theirs.append(f"{row['preset']} " + ", ".join(k for k in known if k))
    unpaired += sum(1 for o in rows if o["special"] and "ordering_holds" not in o)
    verdict, held, judged = tally(results)
    why = (f"with > without in {held} of {judged} cell pairs (the table's ordering column)"
           + (f"; {len(results) - judged} pairs not judged (diverged seeds or zero error)" if len(results) > judged
              else "")
           + (f"; {unpaired} cells stored without their partner" if unpaired else "")
           + (f"; our variants, not judged: {'; '.join(variants)}" if variants else ""))
    return Summary(CLAIM, "with/without: " + listing(ours) if ours else "-", listing(theirs), verdict, why)
