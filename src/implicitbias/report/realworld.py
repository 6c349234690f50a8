"""The real-world poisoning report section: every variant's accuracies with 95% t-intervals over
seeds, paired differences of test error against clean and the same-norm controls, a verdict, per-seed
numbers, a clean-vs-poisoned scatter, and one line per ``--sweep`` point."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..experiments.realworld import NAME, PRESETS, VARIANTS
from ..runtime.overrides import base_preset
from ..core.stats import holm, t_interval, t_test_pvalue
from .common import (
    mean_ci,
    NOT_JUDGED,
    Summary,
    figure_link,
    g3,
    latest_runs,
    listing,
    preset_overrides,
    pyplot,
    save_figure,
    tally,
)

FIGURE = "clean_vs_poisoned.png"
AUTHORS_FIGURE = "authors_differences.png"
ALPHA = 0.05  # family-wise level of the Holm-corrected verdicts
COMPARISONS = ("clean", "uniform")  # the two controls every verdict needs (the p-value family: 2 per row)


def rows(runs) -> list[dict]:
    """One row per stored config (latest run): per-seed lists, mean and 95% t-half-width of each
    quantity, and the paired differences of test error."""
    out = []
    for r in latest_runs(runs):
        m = r.metrics
        cfg = r.config
        row = {"experiment": NAME, "preset": r.preset or "custom", "model": cfg["model"],
               "dataset": cfg.get("dataset", "digits"), "readout": cfg["readout"],
               "eps": cfg["eps"], "poison_frac": cfg["poison_frac"], "penalty": cfg["penalty"], "mode": cfg["mode"],
               "epochs": cfg["epochs"], "iterations": cfg["iterations"], "restarts": cfg["restarts"],
               "seeds": m["seeds"], "wall_seconds": m.get("wall_seconds"), "run": r.path.name,
               "backend": (r.meta.get("versions") or {}).get("backend", "unknown")}
        overrides = preset_overrides(r, PRESETS)
        row["overrides"] = overrides
        for v in VARIANTS:
            for q in (
                "test_acc",
                "test_loss",
                "target_acc",
                "rest_acc",
                "train_loss",
                "clean_train_acc",
                "fits",
                "rounds",
                "energy_share",
                "last_row_ratio",
                "matching_loss",
                "l2_mean",
                "linf",
            ):
                key = f"{v}_{q}"
                if key in m:
                    vals = [float(x) for x in m[key]]
                    row[f"{key}_per_seed"] = vals
                    row[f"{key}_mean"], row[f"{key}_ci"] = t_interval(vals)
        err = {v: 1 - np.asarray(m[f"{v}_test_acc"], float) for v in VARIANTS}
        for a, b in (("poisoned", "clean"), ("poisoned", "uniform"), ("poisoned", "end")):
            row[f"diff_err_{a}_{b}_mean"], row[f"diff_err_{a}_{b}_ci"] = t_interval(err[a] - err[b])
            row[f"p_{a}_{b}"] = t_test_pvalue(err[a] - err[b])
        row["brew_matching_mean"], row["brew_matching_ci"] = t_interval(m["brew_matching_mean"])
        row["clean_train_s_mean"] = float(np.mean(m["clean_train_s"]))
        row["brew_s_mean"] = float(np.mean(m["brew_s"]))
        out.append(row)
    out.sort(key=lambda r: r["preset"])
    apply_holm(out)
    return out


def apply_holm(rows: list[dict]) -> None:
    """Holm-adjust, in place, the paired t-test p-values of poisoned test error against the clean model
    and the uniform control over *every* row of the section (presets and sweep points alike: all of them
    are reported, so all of them are in the family): ``p_holm_vs_<b>`` per comparison, ``p_holm`` (the
    larger of the two: the verdict needs both) and ``holm_family`` (the number of comparisons)."""
    keys = [(i, b) for i, r in enumerate(rows) for b in COMPARISONS]
    adjusted = holm([rows[i][f"p_poisoned_{b}"] for i, b in keys])
    family = sum(1 for i, b in keys if math.isfinite(rows[i][f"p_poisoned_{b}"]))
    for (i, b), q in zip(keys, adjusted, strict=True):
        rows[i][f"p_holm_vs_{b}"] = q
    for r in rows:
        r["p_holm"] = max(r[f"p_holm_vs_{b}"] for b in COMPARISONS)
        r["holm_family"] = family


def is_sweep_row(row) -> bool:
    """Made by ``--sweep`` (its preset name carries the swept values)."""
    return base_preset(row["preset"]) != row["preset"]


def _compare(row, other: str) -> str:
    """``above`` / ``below`` / ``not different from``: by the Holm-adjusted p-value at ``ALPHA`` when the
    row has one (rows made by :func:`rows`), else by the paired 95% t-interval."""
    mean, ci = row[f"diff_err_poisoned_{other}_mean"], row[f"diff_err_poisoned_{other}_ci"]
    q = row.get(f"p_holm_vs_{other}")
    significant = (q < ALPHA) if q is not None and math.isfinite(q) else (abs(mean) > ci)
    if significant and mean > 0:
        return "above"
    if significant and mean < 0:
        return "below"
    return "not different from"


def _decision(row) -> tuple[str, str, str]:
    """``(kind, vs clean, vs uniform)`` from the paired differences of test error (:func:`_compare`:
    Holm-corrected p-values over the section); ``kind`` is ``n/a``
    (too few seeds), ``effect`` (significantly above both clean and the uniform control, every
    poisoned model fitting as well as clean), ``effect_not_fit``, ``reverse`` (significantly below
    clean) or ``none``."""
    if not all(math.isfinite(row[f"diff_err_poisoned_{b}_ci"]) for b in ("clean", "uniform")):
        return "n/a", "", ""
    c, u = _compare(row, "clean"), _compare(row, "uniform")
    if c == u == "above":
        return ("effect" if all(row.get("poisoned_fits_per_seed") or []) else "effect_not_fit"), c, u
    return ("reverse" if c == "below" else "none"), c, u


def verdict(row) -> str:
    """One line from the paired differences of test error (Holm-corrected over the section where the
    row carries p-values): an effect needs poisoned error significantly above the clean model's *and*
    above the same-norm uniform control's."""
    kind, c, u = _decision(row)
    if kind == "n/a":
        return "too few seeds for an interval"
    if kind.startswith("effect"):
        fits = row.get("poisoned_fits_per_seed") or []
        caveat = (
            ""
            if kind == "effect"
            else (
                f"; but the poisoned model fit its data as well as the clean one in only {int(sum(fits))}/{len(fits)} "
                "seeds, so part of the gap may be under-fitting"
            )
        )
        return "effect: poisoned test error significantly above both clean and the same-norm uniform control" + (
            f" (Holm p = {row['p_holm']:.3g} over {row['holm_family']} comparisons)" if "p_holm" in row else ""
        ) + caveat
    return (
        f"no significant effect: poisoned test error is {c} clean "
        f"({100 * row['diff_err_poisoned_clean_mean']:+.2f} ± {100 * row['diff_err_poisoned_clean_ci']:.2f} pts) "
        f"and {u} the uniform control "
        f"({100 * row['diff_err_poisoned_uniform_mean']:+.2f} ± {100 * row['diff_err_poisoned_uniform_ci']:.2f} pts)"
        + (f"; Holm p = {row['p_holm']:.3g} over {row['holm_family']} comparisons" if "p_holm" in row else "")
    )


def figures(runs, rows: list[dict], fig_dir: Path) -> list[Path]:
    """Clean vs retrained test error, one point per seed and variant (above the diagonal = worse),
    for the presets' runs (sweep points are left to the sweep table)."""
    written = []
    authors = [r for r in rows if is_authors_row(r)]
    if authors:
        written.append(_authors_figure(authors, Path(fig_dir) / AUTHORS_FIGURE))
    rows = [r for r in rows if not is_sweep_row(r)]
    if not rows:
        return written
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    markers = {"poisoned": "o", "uniform": "^", "end": "s"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lo, hi = 1.0, 0.0
    for i, r in enumerate(rows):
        c = colors[i % len(colors)]
        ce = 1 - np.asarray(r["clean_test_acc_per_seed"])
        for v, mk in markers.items():
            ve = 1 - np.asarray(r[f"{v}_test_acc_per_seed"])
            lo, hi = min(lo, ce.min(), ve.min()), max(hi, ce.max(), ve.max())
            ax.scatter(
                ce,
                ve,
                marker=mk,
                color=c,
                alpha=0.9 if v == "poisoned" else 0.45,
                facecolors=c if v == "poisoned" else "none",
                label=f"{r['preset']} {v}" + (" *" if r["overrides"] else ""),
            )
    pad = 0.1 * max(hi - lo, 1e-3)
    lim = (max(0.0, lo - pad), hi + pad)
    ax.plot(lim, lim, "k--", lw=1)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("clean test error")
    ax.set_ylabel("retrained test error (poisoned / control)")
    ax.set_title("one point per seed; above the diagonal = worse", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return [*written, save_figure(fig, Path(fig_dir) / FIGURE)]


def short_verdict(row) -> str:
    """``**effect**`` / ``effect, not fit`` / ``none`` / ``reverse`` / ``n/a`` (see :func:`_decision`)."""
    return {"effect": "**effect**", "effect_not_fit": "effect, not fit"}.get(_decision(row)[0], _decision(row)[0])


def _nfit(row, variant: str) -> str:
    fits = row.get(f"{variant}_fits_per_seed")
    return "-" if fits is None else f"{int(sum(fits))}/{len(fits)}"


def is_authors_row(row) -> bool:
    """A run of the authors' protocol (presets ``authors/...`` and ``authors-cpu/...``)."""
    return row["preset"].startswith(("authors/", "authors-cpu/")) and not is_sweep_row(row)


def authors_verdict(row) -> str:
    """The plain verdict of one authors'-protocol preset (Holm-corrected over the section)."""
    kind = _decision(row)[0]
    fits = row.get("poisoned_fits_per_seed") or []
    if kind == "n/a":
        return "too few seeds for a test"
    if kind == "effect":
        return f"poisoning raises test error beyond both controls at equal fit, Holm-corrected p < {ALPHA:g}"
    if kind == "effect_not_fit":
        return (
            f"test error beyond both controls (Holm-corrected p < {ALPHA:g}), but only {int(sum(fits))}/{len(fits)} "
            "poisoned models fit as well as the clean one: not at equal fit"
        )
    return f"no: poisoning does not raise test error beyond both controls (Holm-corrected p = {row['p_holm']:.2g})"


def authors_markdown(rows: list[dict], out_dir: Path) -> str:
    """The authors'-protocol presets: test errors of the four variants, paired differences with 95%
    t-intervals, uncorrected and Holm-corrected p-values, fit, the two end-concentration metrics and a
    verdict per preset; the forest plot of the differences."""
    out = [
        "### The authors' protocol (`authors/`, `authors-cpu/`)\n",
        "Test error in % (mean ± 95% t-interval over seeds). Differences are paired per seed (poisoned minus "
        "the clean model / minus the same-norm uniform control, percentage points); p: two-sided paired "
        f"t-test; Holm: the larger of the two after Holm's correction over all {rows[0]['holm_family']} "
        "comparisons of this section (every row and sweep point, against clean and uniform). Fit: poisoned "
        "models whose last-epoch training loss came within `fit_tol` of the clean model's. Last row: the "
        "authors' metric (mean over poisons of the last image row's share of ‖δ‖); energy share: share of "
        "Σ|δ|² in the last quarter. A preset's own seeds (0-4) are discovery seeds; a row marked `*` with "
        "only its seeds changed is a replication on new seeds, reported apart and never pooled. Under this "
        "protocol the retrained models see more data than the clean model (the poisons are added as copies "
        "and the other clean rows are redrawn), so poisoned - clean mixes the poisons with the extra data; "
        "the uniform control, retrained on a set of the same size and norm, is the comparison that isolates "
        "the poisons.\n",
        "| preset | seeds | clean | poisoned | uniform | end | poisoned - clean | poisoned - uniform "
        "| p clean / uniform | Holm p | fit | last row | energy share | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = [f"{100 * (1 - r[f'{v}_test_acc_mean']):.2f}" for v in VARIANTS]
        out.append(
            f"| {r['preset']}{' *' if r['overrides'] else ''} | {len(r['seeds'])} | " + " | ".join(err)
            + f" | {mean_ci(r, 'diff_err_poisoned_clean', 100, 2)} | "
            f"{mean_ci(r, 'diff_err_poisoned_uniform', 100, 2)} | "
            f"{r['p_poisoned_clean']:.2g} / {r['p_poisoned_uniform']:.2g} | {r['p_holm']:.2g} | "
            f"{_nfit(r, 'poisoned')} | {mean_ci(r, 'poisoned_last_row_ratio', 1, 3)} | "
            f"{mean_ci(r, 'poisoned_energy_share', 1, 3)} | {authors_verdict(r)} |"
        )
    link = figure_link(out_dir, out_dir / "figures" / NAME / AUTHORS_FIGURE,
                       "paired differences of test error, authors' protocol")
    if link:
        out.append(f"\n{link}\n")
    return "\n".join(out) + "\n"


def authors_results(rows: list[dict], runs) -> dict:
    """The machine-made summary of the authors'-protocol runs (``results/realworld-authors.json``): per
    preset its per-seed test errors of every variant, uncorrected and Holm-corrected p-values,
    poisoned models that fit, the end-concentration metrics, backend and wall time, with the stored run's
    config, hash and library versions (re-running that config reproduces the row on a CPU)."""
    by_dir = {r.path.name: r for r in latest_runs(runs)}
    out = []
    for r in rows:
        if not is_authors_row(r):
            continue
        run = by_dir[r["run"]]
        err = {v: [1 - a for a in r[f"{v}_test_acc_per_seed"]] for v in VARIANTS}
        out.append({
            "preset": r["preset"], "model": r["model"], "dataset": r["dataset"], "seeds": r["seeds"],
            **{f"{v}_error": err[v] for v in VARIANTS},
            "diff_vs_clean": {"mean": r["diff_err_poisoned_clean_mean"], "ci95": r["diff_err_poisoned_clean_ci"]},
            "diff_vs_uniform": {"mean": r["diff_err_poisoned_uniform_mean"],
                                "ci95": r["diff_err_poisoned_uniform_ci"]},
            "p_vs_clean": r["p_poisoned_clean"], "p_vs_uniform": r["p_poisoned_uniform"],
            "p_holm": r["p_holm"], "p_holm_vs_clean": r["p_holm_vs_clean"],
            "p_holm_vs_uniform": r["p_holm_vs_uniform"], "holm_family": r["holm_family"],
            "fit": [bool(f) for f in r["poisoned_fits_per_seed"]],
            "last_row_ratio": r["poisoned_last_row_ratio_per_seed"],
            "end_energy_share": r["poisoned_energy_share_per_seed"],
            "verdict": authors_verdict(r), "effect": _decision(r)[0] == "effect",
            # seeds other than the preset's, nothing else changed: a replication of the preset's discovery seeds
            "role": ("replication" if set(r["overrides"]) == {"seeds"}
                     else "custom" if r["overrides"] else "discovery"),
            "overrides": r["overrides"], "backend": r["backend"], "wall_seconds": r["wall_seconds"],
            "run": r["run"], "config": run.config, "versions": run.meta.get("versions"),
        })
    return {
        "experiment": NAME,
        "note": "authors'-protocol presets: test error per seed of the clean model, the poisoned "
        "retraining and the same-norm uniform and end controls; paired two-sided t-tests of poisoned minus "
        "clean / minus uniform test error; Holm over every comparison of the report's real-world section "
        f"(holm_family); effect = both Holm-corrected p < {ALPHA:g}, both differences positive, and every "
        "poisoned model fitting as well as the clean model. role: discovery (the preset's own seeds 0-4), "
        "replication (the same preset on other seeds, reported apart, never pooled) or custom (other overrides).",
        "presets": out,
    }


def _authors_figure(rows: list[dict], path: Path) -> Path:
    """Forest plot: per authors' preset, poisoned minus clean and minus uniform test error (points per
    seed, mean and 95% t-interval)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        for j, (b, color) in enumerate((("clean", "C0"), ("uniform", "C1"))):
            y = i + (j - 0.5) * 0.3
            # error difference = accuracy of the control minus accuracy of the poisoned model
            d = 100 * (np.asarray(r[f"{b}_test_acc_per_seed"]) - np.asarray(r["poisoned_test_acc_per_seed"]))
            mean, ci = r[f"diff_err_poisoned_{b}_mean"] * 100, r[f"diff_err_poisoned_{b}_ci"] * 100
            ax.scatter(d, np.full(d.shape, y), s=10, color=color, alpha=0.45)
            ax.errorbar(mean, y, xerr=ci if math.isfinite(ci) else None, fmt="o", color=color, capsize=3,
                        label=f"poisoned - {b}" if i == 0 else None)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(rows)), [r["preset"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # first preset on top, room for both offset rows
    ax.set_xlabel("test error difference (percentage points); right of 0 = poisoning hurts")
    ax.set_title("one dot per seed; mean ± 95% t-interval", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_markdown(rows: list[dict]) -> str:
    """One line per swept config: accuracies of every variant, paired differences, verdict."""
    out = [
        "Lever sweep (`--sweep`; `scripts/sweep_realworld.py`): one line per stored config, 95% t-intervals "
        "over its seeds. Test accuracy in %; differences of test error in points (poisoned minus clean / "
        "minus the same-norm uniform control); verdict `effect` needs both significantly above 0 and every "
        "poisoned model fitting its training set as well as the clean model did (`effect, not fit` otherwise: "
        "the gap may be under-fitting), `reverse` = poisoned significantly better than clean. Fits: seeds whose "
        "poisoned / uniform-control model reached the clean model's training loss.\n",
        "| base preset | swept | seeds | clean | poisoned | uniform | end | poisoned - clean | poisoned - uniform | "
        "energy share end | brew M | fits | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (base_preset(r["preset"]), r["preset"])):
        swept = r["preset"][len(base_preset(r["preset"])) :].strip("[]")
        out.append(
            f"| {base_preset(r['preset'])} | {swept} | {len(r['seeds'])} ({','.join(map(str, r['seeds']))}) | "
            + " | ".join(mean_ci(r, f"{v}_test_acc", 100, 2) for v in VARIANTS)
            + f" | {mean_ci(r, 'diff_err_poisoned_clean', 100, 2)} | "
            f"{mean_ci(r, 'diff_err_poisoned_uniform', 100, 2)} | "
            f"{mean_ci(r, 'poisoned_energy_share', 1, 2)} | {mean_ci(r, 'brew_matching', 1, 3)} | "
            f"{_nfit(r, 'poisoned')} / {_nfit(r, 'uniform')} | {short_verdict(r)} |"
        )
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], out_dir: Path) -> str:
    """Per preset: mean ± 95% t-interval over seeds of test accuracy/loss, target accuracy and energy
    share for clean, poisoned and the two same-norm controls; paired differences; verdict; per-seed
    numbers; the clean-vs-poisoned scatter. Runs made by ``--sweep`` get one line each in a sweep
    table after these."""
    out_dir = Path(out_dir)
    swept = [r for r in rows if is_sweep_row(r)]
    rows = [r for r in rows if not is_sweep_row(r)]
    if not rows:
        return sweep_markdown(swept)
    out = [
        "Clean-label gradient-matching poisoning on sequence data (digits: length 64; MNIST-1D: length 40). "
        "Mean ± 95% t-interval "
        "over seeds. `uniform`/`end`: random perturbations with each poison's matched ℓ2 norm, spread over "
        "the sequence / on its last quarter. Energy share = share of Σ|δ|² in the last quarter "
        "(uniform placement ≈ 0.25); last row = the authors' metric, mean over poisons of the last image "
        "row's share of ‖δ‖ (digits: last 8 steps, uniform ≈ 0.35; MNIST-1D: last step, uniform ≈ 0.16). "
        "Accuracies in %.\n"
    ]
    out.append(
        "| preset | variant | test acc | test loss | target acc | rest acc | energy share end | last row | fits |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        star = " *" if r["overrides"] else ""
        for v in VARIANTS:
            nfit = _nfit(r, v)
            out.append(
                f"| {r['preset']}{star} | {v} | {mean_ci(r, f'{v}_test_acc', 100, 2)} | "
                f"{mean_ci(r, f'{v}_test_loss')} | "
                f"{mean_ci(r, f'{v}_target_acc', 100, 2)} | {mean_ci(r, f'{v}_rest_acc', 100, 2)} | "
                f"{mean_ci(r, f'{v}_energy_share') if v != 'clean' else '-'} | "
                f"{mean_ci(r, f'{v}_last_row_ratio') if v != 'clean' else '-'} | {nfit} |"
            )
    out.append("")
    out.append(
        "Paired differences of test error (percentage points, poisoned minus other), brew matching loss "
        "M = 1 - cos (mean over groups), cost:\n"
    )
    out.append(
        "| preset | seeds | poisoned - clean | poisoned - uniform | poisoned - end | brew M | clean train s | brew s "
        "| wall s | verdict |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        star = " *" if r["overrides"] else ""
        wall = r.get("wall_seconds")
        out.append(
            f"| {r['preset']}{star} | {len(r['seeds'])} | {mean_ci(r, 'diff_err_poisoned_clean', 100, 2)} | "
            f"{mean_ci(r, 'diff_err_poisoned_uniform', 100, 2)} | {mean_ci(r, 'diff_err_poisoned_end', 100, 2)} | "
            f"{mean_ci(r, 'brew_matching')} | {r['clean_train_s_mean']:.1f} | {r['brew_s_mean']:.1f} | "
            f"{'-' if wall is None else f'{wall:.0f}'} | {verdict(r)} |"
        )
    out.append("")
    out.append("Per seed (test accuracy %, clean / poisoned / uniform / end; poisoned energy share):\n")
    out.append("| preset | seed | clean | poisoned | uniform | end | energy share | poisoned extra rounds |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for i, s in enumerate(r["seeds"]):
            acc = [100 * r[f"{v}_test_acc_per_seed"][i] for v in VARIANTS]
            out.append(
                f"| {r['preset']} | {s} | "
                + " | ".join(f"{a:.2f}" for a in acc)
                + f" | {r['poisoned_energy_share_per_seed'][i]:.3f} | {int(r['poisoned_rounds_per_seed'][i])} |"
            )
    elsewhere = sorted({r["backend"] for r in rows + swept} - {"cpu: cpu"})
    if elsewhere:
        out.append(
            "\nRuns not made on a CPU (float results differ slightly between backends and, on a GPU, between "
            "runs; compare variants within a run): "
            + "; ".join(f"{b}: " + ", ".join(r["preset"] for r in rows + swept if r["backend"] == b) for b in elsewhere)
        )
    if any(r["overrides"] for r in rows):
        out.append(
            "\n\\* overrides of the preset: "
            + "; ".join(f"{r['preset']}: {r['overrides']}" for r in rows if r["overrides"])
        )
    link = figure_link(out_dir, out_dir / "figures" / NAME / FIGURE, "clean vs poisoned test error per seed")
    if link:
        out.append(f"\n{link}\n")
    authors = [r for r in rows if is_authors_row(r)]
    if authors:
        out.append("\n" + authors_markdown(authors, out_dir))
    if swept:
        out.append("\n" + sweep_markdown(swept))
    return "\n".join(out) + "\n"


_KIND_TEXT = {"effect": "effect", "effect_not_fit": "effect, not at equal fit", "none": "no effect",
              "reverse": "reverse", "n/a": "too few seeds"}
CLAIM = "Clean-label poisoning raises the test error of S4D, LRU and Mamba2 classifiers (the paper's Table 2)"


def summary(rows: list[dict]) -> Summary:
    """The summary line from the section's own verdicts (:func:`_decision`: Holm-corrected paired
    tests against the clean model and the same-norm uniform control, at equal fit): per preset run
    (the sweep's points when only those are stored), effect or not. The paper's Table 2 numbers are
    for the authors' full-size runs, not stored here: theirs is ``-``."""
    judged_rows = [r for r in rows if not is_sweep_row(r)] or rows
    results, ours = [], []
    for r in judged_rows:
        kind = _decision(r)[0]
        results.append(None if kind == "n/a" else kind == "effect")
        star = " *" if r["overrides"] else ""
        ours.append(f"{r['preset']}{star} {100 * r['diff_err_poisoned_clean_mean']:+.2f} / "
                    f"{100 * r['diff_err_poisoned_uniform_mean']:+.2f} ({_KIND_TEXT.get(kind, kind)})")
    verdict, held, judged = tally(results)
    p = [r["p_holm"] for r in judged_rows if math.isfinite(r.get("p_holm", math.nan))]
    why = (f"an effect (poisoned error above clean and the uniform control, Holm p < {ALPHA:g}, at equal fit) "
           f"in {held} of {judged} runs"
           + (f"; smallest Holm p {g3(min(p))} ({judged_rows[0]['holm_family']} comparisons)" if p else "")
           if verdict != NOT_JUDGED else "too few seeds for a test")
    return Summary(CLAIM, "poisoned - clean / - uniform test error (pp): " + listing(ours), "-", verdict, why)
