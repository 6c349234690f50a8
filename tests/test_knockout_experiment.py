"""The knockout experiment on tiny models trained here (experiments/knockout.py): its refusals, its source
sets, the across-seed summary in closed form, and a tiny run whose numbers match a direct knockout."""

import dataclasses

import numpy as np
import pytest

from implicitbias.core.stats import t_interval
from implicitbias.experiments import knockout as ko


def test_configs_that_cannot_measure_are_refused():
    with pytest.raises(ValueError, match="must exceed the convolutions' reach"):
        ko.Config(kind="mamba2", n_layers=8, gap=24)  # 3 x 8 = 24: the convs alone reach the last token
    ko.Config(kind="transformer", n_layers=8, gap=24)  # no convolution: any gap
    with pytest.raises(ValueError, match="window sizes"):
        ko.Config(n_layers=8, window_sizes=(1, 9))
    with pytest.raises(ValueError, match="sources"):
        ko.Config(sources=("subject", "object"))
    with pytest.raises(ValueError, match="kind must be one of"):
        ko.Config(kind="rwkv")
    assert ko.PRESETS["paper/transformer"].run_groups() == ("all",)


def test_source_sets_are_the_authors_positions_and_the_gap():
    task = ko.PRESETS["paper/mamba2"].task()
    masks = dict(zip(ko.SOURCES, ko.source_masks(task, ko.SOURCES)))
    idx = np.arange(task.length)
    a, b = task.subject_span
    np.testing.assert_array_equal(np.flatnonzero(masks["subject"]), np.arange(a, b))
    np.testing.assert_array_equal(masks["relation"], ~masks["subject"])  # every non-subject token, last included
    assert np.flatnonzero(masks["last"]).tolist() == [task.length - 1]
    assert np.flatnonzero(masks["first"]).tolist() == [0]
    np.testing.assert_array_equal(masks["filler"], (idx >= b) & (idx < b + task.gap))


def test_seeds_are_summarised_apart_then_with_a_t_interval():
    cfg = ko.Config(sources=("subject",), groups=("all",))
    per_seed = [{"flow": {"all": {"subject": {"mean": [m, 2 * m]}}}} for m in (-10.0, -30.0, -20.0)]
    per_seed.append({"prompts_correct": 0})  # a seed that kept no prompt is left out, not counted as 0
    out = ko.across_seeds(per_seed, cfg)["all"]["subject"]
    assert out["seeds"] == 3 and out["mean"] == [pytest.approx(-20.0), pytest.approx(-40.0)]
    assert out["half_width"][0] == pytest.approx(t_interval([-10.0, -30.0, -20.0])[1], rel=1e-12)


@pytest.mark.slow  # 26 s; the fast suite checks the sweep against single forwards (tests/test_knockout.py)
def test_a_tiny_run_measures_what_a_direct_knockout_gives_and_reports_it(monkeypatch, tmp_path):
    """The tiny Mamba-2 preset end to end (run, store, report section); its flow numbers equal the knockout
    computed directly on its trained model."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from implicitbias.interp import info_flow as fl
    from implicitbias.interp.knockout import knockout_logits, layer_windows
    from implicitbias.report import knockout as section
    from implicitbias.runtime.store import Store

    cfg = dataclasses.replace(ko.PRESETS["tiny/mamba2"], groups=("all", "slow"), window_sizes=(2,))
    kept = {}
    real = ko.fr.train_lm

    def spy(*a, **kw):  # keep the trained model to check the experiment's numbers against
        out = real(*a, **kw)
        kept["lm"] = out.model
        return out

    monkeypatch.setattr(ko.fr, "train_lm", spy)
    record = ko.run(cfg)
    m, arrays = record.metrics["per_seed"][0], record.arrays
    assert m["accuracy"] > 1 / cfg.n_attributes and m["prompts_correct"] >= 1
    lm, task = kept["lm"], cfg.task()
    tokens, answers = arrays["seed0_prompts"], arrays["seed0_answers"]
    assert (np.asarray(ko.fr.last_probs(lm, tokens)).argmax(-1) == answers).all()  # the kept prompts are correct
    assert arrays["seed0_change"].shape == (tokens.shape[0], 2, cfg.n_layers - cfg.ws + 1, len(cfg.sources))
    change = arrays["seed0_change"][:, 0]  # group 'all'
    src = jnp.asarray(ko.source_masks(task, cfg.sources))
    t, a = tokens[0], int(answers[0])
    last = jnp.arange(t.shape[0]) == t.shape[0] - 1
    one = eqx.filter_jit(lambda w, s: jax.nn.softmax(knockout_logits(lm, t, w, s, last)[-1])[a])
    for w, window in enumerate(layer_windows(cfg.n_layers, cfg.ws)):
        for s in range(len(cfg.sources)):
            expect = fl.relative_change(one(window, src[s]), fl.last_probs(lm, t)[a])
            # same float32 ops, batched or not: a few ulps of p relative to p_base (x100 percent)
            assert change[0, w, s] == pytest.approx(float(expect), abs=100 * 64 * float(np.finfo(np.float32).eps))
    assert m["flow"]["all"]["subject"]["prompts"] == tokens.shape[0]
    # stored and read back by the report section: its table shows the seed's strongest subject window
    store = Store(tmp_path / "runs")
    store.save(ko.NAME, cfg, record, preset="tiny/mamba2", wall_seconds=1.0)
    runs = list(store.runs(ko.NAME))
    rows = section.rows(runs)
    w, mean = section.strongest(m["flow"]["all"]["subject"]["mean"])
    assert f"| all | subject | {w} | {mean:+.1f}% |" in section.markdown(rows, tmp_path)
    summ = section.summary(rows)  # one seed: no interval, so only the window's depth is judged
    assert f"subject {mean:+.0f}% at window {w} of 2" in summ.ours and summ.why.startswith(f"{int(w >= 2 / 3)} of 1")
    assert [p.name for p in section.figures(runs, rows, tmp_path / "fig")] == ["tiny_mamba2.png"]
