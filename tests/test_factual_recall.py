"""The synthetic factual-recall task (tasks/factual_recall.py): distinct subjects, prompts in the stated
format with the fact's attribute, the convolution-reach check, and a tiny LM that learns the facts."""

import jax
import numpy as np
import pytest

from implicitbias.models.lm import make_lm
from implicitbias.tasks import factual_recall as fr


def test_prompts_carry_the_subject_the_gap_and_the_relation_template():
    task = fr.RecallTask(n_subjects=30, subject_vocab=8, gap=5)
    fs = fr.facts(task)
    assert len({tuple(s) for s in fs.subjects}) == 30  # distinct subjects
    tokens, answers, ids = fr.sample_prompts(task, fs, jax.random.PRNGKey(0), 64)
    tokens, answers, ids = np.asarray(tokens), np.asarray(answers), np.asarray(ids)
    assert tokens.shape == (64, task.length) and (tokens[:, 0] == fr.BOS).all()
    a, b = task.subject_span
    np.testing.assert_array_equal(tokens[:, a:b], fs.subjects[ids[:, 0]])
    gap = tokens[:, b : b + task.gap]
    assert ((gap >= task.filler_base) & (gap < task.attribute_base)).all()
    np.testing.assert_array_equal(tokens[:, -1], task.relation_base + ids[:, 1] * task.template_len + 2)
    np.testing.assert_array_equal(answers, fs.attributes[ids[:, 0], ids[:, 1]])
    assert ((answers >= task.attribute_base) & (answers < task.vocab)).all()


def test_bad_tasks_and_short_gaps_are_refused():
    with pytest.raises(ValueError, match="cannot name"):
        fr.RecallTask(n_subjects=100, subject_vocab=5, subject_len=2)
    with pytest.raises(ValueError, match="must exceed the convolutions' reach"):
        fr.check_gap(fr.RecallTask(gap=12), d_conv=4, n_layers=4)
    fr.check_gap(fr.RecallTask(gap=13), d_conv=4, n_layers=4)


@pytest.mark.slow  # the fast suite trains a tiny LM in tests/test_knockout_experiment.py
def test_a_tiny_lm_learns_the_facts():
    task = fr.RecallTask(n_subjects=8, subject_vocab=4, n_relations=2, n_attributes=6, n_filler=4, gap=4)
    # one Mamba-1 layer: its conv and gate combine the two subject tokens (one linear Mamba-2 mixing
    # layer cannot: 600 steps left it at the attributes' marginal, loss log 6)
    lm = make_lm("mamba1", task.vocab, 16, 1, d_state=8, key=jax.random.PRNGKey(0))
    before = fr.evaluate(lm, task, jax.random.PRNGKey(9), 256)
    out = fr.train_lm(lm, task, jax.random.PRNGKey(1), steps=300, batch=64, lr=1e-2, chunk=150)
    after = fr.evaluate(out.model, task, jax.random.PRNGKey(9), 256)
    assert out.losses[-50:].mean() < 0.5 * out.losses[:50].mean()
    # chance is 1/6 among the attributes; 16 facts of 6 values are learned far above it
    assert after["accuracy"] > 0.6 > before["accuracy"]
