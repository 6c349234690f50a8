"""The equation-chain task (tasks/equations.py): the generator's invariants checked on the prompt *text* by an
independent parser and solver, their test set's layout, the split, and their reward on hand-written
completions (every way their regexes fail)."""

import re
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from implicitbias.tasks import equations as eq


def _parse(text: str):
    """An independent reading of a prompt: known (label, value), edges {u: [(v, delta)]}, incoming {v: u},
    the asked label; raises on any statement that is neither form."""
    body, find = text.rsplit(". Find x_", 1)
    assert find.endswith(".")
    target = int(find[:-1])
    known, out, incoming = [], {}, {}
    for st in body.split(". "):
        if m := re.fullmatch(r"x_(\d+) = (\d+)", st):
            known.append((int(m[1]), int(m[2])))
        else:
            m = re.fullmatch(r"x_(\d+) = x_(\d+) ([+-]) (\d+)", st)
            assert m, st
            v, u, c = int(m[1]), int(m[2]), int(m[4]) * (1 if m[3] == "+" else -1)
            out.setdefault(u, []).append((v, c))
            assert v not in incoming, "a variable defined by two edges"
            incoming[v] = u
    assert len(known) == 1
    return known[0], out, incoming, target


def _solve(text: str):
    """Follow the edges forward from the known variable to its chain's end: (end, value, path)."""
    (s, value), out, _, _ = _parse(text)
    path = [s]
    while path[-1] in out:
        assert len(out[path[-1]]) == 1, "a chain branches"
        v, c = out[path[-1]][0]
        value += c
        path.append(v)
    return path[-1], value, path


def _component(start, out, incoming):
    seen, todo = set(), [start]
    while todo:
        x = todo.pop()
        if x in seen:
            continue
        seen.add(x)
        todo += [v for v, _ in out.get(x, [])] + ([incoming[x]] if x in incoming else [])
    return seen


def test_the_docstring_example_of_their_generator_is_written_as_they_write_it():
    """Their ``chains_to_equations_string`` docstring: "x_3 = 10. x_1 = x_3 + 4. x_2 = x_1 - 7. Find x_2."."""
    inst = eq.Instance((eq.Equation(3, None, 10), eq.Equation(1, 3, 4), eq.Equation(2, 1, -7)), 2, 7, 2, (3, 1, 2))
    assert inst.text == "x_3 = 10. x_1 = x_3 + 4. x_2 = x_1 - 7. Find x_2."
    assert _solve(inst.text) == (2, 7, [3, 1, 2]) and inst.known == eq.Equation(3, None, 10)


@pytest.mark.parametrize("name", list(eq.MIXTURES))
def test_every_instance_asks_the_end_of_the_known_chain_and_its_answer_follows_it(name):
    layout = eq.MIXTURES[name]
    insts = eq.generate(layout, 400, seed=1)
    assert len({i.text for i in insts}) == len(insts)  # unique by text
    for inst in insts:
        (s, _), out, incoming, target = _parse(inst.text)
        end, value, path = _solve(inst.text)
        assert target == end == inst.target and value == inst.answer and tuple(path) == inst.path
        assert len(path) - 1 == inst.steps and layout.min_steps <= inst.steps <= layout.max_steps
        assert target not in out  # the asked variable ends its chain
        # n_chains chains of chain_len, labels an injection into 1..max_label (here a permutation of 1..2L)
        labels = set(out) | set(incoming)
        assert labels == set(range(1, layout.n_nodes + 1)) and len(incoming) == layout.n_nodes - layout.n_chains
        assert all(1 <= abs(c) <= 3 for edges in out.values() for _, c in edges)
        # the distractor chain holds no known value: the known variable's chain is chain_len long, the rest apart
        mine = _component(s, out, incoming)
        assert len(mine) == layout.chain_len and target in mine
        # a start inside its chain keeps its incoming equation (x_s defined twice)
        assert (s in incoming) == (inst.steps < layout.chain_len - 1)


@pytest.mark.parametrize("name", ["1-14", "1-4"])
def test_the_step_count_is_uniform_over_the_mixtures_range(name):
    layout = eq.MIXTURES[name]
    counts = Counter(i.steps for i in eq.generate(layout, 2000, seed=2))
    k = layout.max_steps - layout.min_steps + 1
    assert sorted(counts) == list(range(layout.min_steps, layout.max_steps + 1))
    # chi-square goodness of fit to uniform at level 1e-4 (a seeded draw: the same on every machine); with ~143 per
    # cell it fails a rule that puts 30% more mass on one step count (~4 sd)
    assert stats.chisquare([counts[d] for d in sorted(counts)], [2000 / k] * k).pvalue > 1e-4


def test_their_test_set_is_one_chain_of_thirty_with_the_known_value_fourteen_steps_from_its_end():
    insts = eq.generate(eq.AUTHORS_TEST, 50, seed=3, unique=False)
    for inst in insts:
        (s, _), out, incoming, target = _parse(inst.text)
        assert len(inst.equations) == 30 and inst.steps == 14 and _solve(inst.text)[0] == target
        assert set(out) | set(incoming) == set(range(1, 31)) and s in incoming  # mid-chain: x_s defined twice
    # answers within value 1..10 plus 14 steps of +-1..3
    assert all(1 - 42 <= i.answer <= 10 + 42 for i in insts)


def test_per_complexity_sets_keep_the_training_layout():
    layout = eq.MIXTURES["1-14"]
    for d in (1, 7, 14):
        insts = eq.generate(layout.at(d), 20, seed=d)
        assert {i.steps for i in insts} == {d} and all(len(i.equations) == layout.n_nodes - 1 for i in insts)


def test_same_seed_same_instances_and_another_seed_others():
    a, b = eq.generate(eq.MIXTURES["1-9"], 30, seed=5), eq.generate(eq.MIXTURES["1-9"], 30, seed=5)
    assert a == b and a != eq.generate(eq.MIXTURES["1-9"], 30, seed=6)


def test_the_split_is_ninety_ten_disjoint_and_complete():
    train, test = eq.split(50_000)
    assert len(test) == 5000 and len(train) == 45_000
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(50_000))
    assert len(eq.split(11)[1]) == 2  # ceil(0.1 x 11), HF's rounding of the test share


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="chain_len - 1"):
        eq.Layout(chain_len=5, max_steps=5)
    with pytest.raises(ValueError, match="max_label"):
        eq.Layout(chain_len=15, max_label=20)
    with pytest.raises(ValueError, match="distinct"):
        eq.generate(eq.Layout(n_chains=1, chain_len=2, min_steps=1, max_steps=1, max_label=2, max_value=1,
                              max_const=1), 10, seed=0)  # 2 labellings x 2 signs x 2 orders = 8 texts


@pytest.mark.parametrize("completion, fmt, ans", [
    ("x_3 = 10, so x_1 = 14</think>\n<answer>14</answer>", 1, 1),
    ("x_1 = 14</think>\n<answer>13</answer>", 1, 0),  # well formed, wrong
    ("</think>\n<answer>14</answer>", 1, 1),  # empty reasoning is allowed
    ("x_1 = 14</think>\n<answer> 1 4 </answer>", 1, 1),  # whitespace removed before comparing
    ("x_1 = 14</think>\n<answer>14</answer>\n", 1, 1),  # `$` also matches before one final newline
    ("x_1 = 14</think>\n<answer>14</answer> done", 0, 1),  # text after the answer
    ("x_1 = 14</think><answer>14</answer>", 0, 1),  # no newline between the blocks
    ("x_1 = 14</think>\n\n<answer>14</answer>", 0, 1),  # two newlines
    ("<think>x_1 = 14</think>\n<answer>14</answer>", 0, 1),  # a second <think> (the prompt already opened it)
    ("a </think> b</think>\n<answer>14</answer>", 0, 1),  # a think tag inside the reasoning
    ("a <thinking> b</think>\n<answer>14</answer>", 1, 1),  # other tags are allowed
    ("x_1 = 14\n<answer>14</answer>", 0, 1),  # no </think>
    ("x_1 = 14</think>\n<answer>\n14</answer>", 1, 0),  # the answer reward wants one line
    ("x_1 = 14</think>\n<answer>13</answer><answer>14</answer>", 1, 0),  # the first answer counts
    ("x_1 = 14</think>\n", 0, 0),  # no answer
])
def test_their_reward_on_hand_written_completions(completion, fmt, ans):
    assert eq.format_reward(completion) == fmt and eq.answer_reward(completion, 14) == ans
    assert eq.reward(completion, "14") == fmt + ans


def test_test_accuracy_reads_the_first_answer_across_lines_without_the_format():
    assert eq.extract_answer("x</think>\n<answer>\n-3 </answer>") == "-3"
    assert eq.extract_answer("no tags at all") is None
    assert eq.extract_answer("<answer>5</answer> junk <answer>6</answer>") == "5"


def test_the_prompt_is_theirs():
    m = eq.messages("x_3 = 10. Find x_3.")
    assert [r["role"] for r in m] == ["system", "user", "assistant"] and m[2]["content"].endswith("<think>")
    assert m[1]["content"].startswith("Given this equation system: x_3 = 10. Find x_3.\n\n")


def test_the_prompt_length_formula_counts_the_encoded_tokens():
    from implicitbias.tasks import equation_tokens as tk

    vocab = tk.Vocab(30)
    for lay in (*eq.MIXTURES.values(), eq.AUTHORS_TEST):
        inst = eq.generate(lay, 1, seed=0)[0]
        assert len(tk.encode_prompt(vocab, inst)) == tk.prompt_length(len(inst.equations))
        assert len(tk.solution(vocab, inst)) == tk.solution_length(inst.steps)
