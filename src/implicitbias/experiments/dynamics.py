"""Dynamics figures: greedy low-rank learning and how special sequences break it (docs/science.md §3).

Table 1's GD runs (:mod:`implicitbias.tasks.teacher_student`) with other settings, plus per-seed
summary numbers (:func:`~implicitbias.tasks.teacher_student.summarize`). Preset families, each
without and with special sequences:

* ``standalone/L6``, ``standalone/L10``: standalone SSM, teacher ``d* = 1``, the authors' notebooks;
* ``network/L6``, ``network/L10``: the SSM inside docs/science.md §2c's ReLU network, the authors' notebooks;
* ``authors/teacher_dim{2,3,4}/L{6,10}``: teachers ``a* = (0.99, 0.8, 0.5, 0.3)[:d*]``, student
  ``B = C = 1`` fixed, the authors' teacher-dimension notebooks (seeds, near-ties, streams);
* ``teacher_dim{2,3,4}/L{6,10}``: the same teachers with our choices (no tie, ``eps = 1e-6``,
  ``jax.random`` streams, seeds by :func:`~implicitbias.tasks.teacher_student.separated_seeds`),
  under which the entries are learned one after another (the staircase).

Both teacher-dimension families measure the extrapolation error from ``h_2`` (``error_from=2``):
with ``B = C = 1`` fixed, ``h_1 = d`` can never equal the teacher's ``d*``. Why each choice, with
the measurements behind it: ``docs/findings/dynamics.md``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..core.precision import in_float64
from ..record import Record
from ..tasks import teacher_student
from ..tasks.teacher_student import STAIRCASE_TEACHER
from . import table1

NAME = "dynamics"
Config = teacher_student.Config


def _standalone(L: int, seed: int, sd_A: float, sd_BC: float, eps: float) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    return replace(base, seeds=(seed,), sd_A=sd_A, sd_BC=sd_BC, eps=eps, lr=0.01, warm_init=0.0,
                   diff=0.05 / math.exp(20 * math.log10(1 / sd_A)), extra_steps=5000,
                   special_positions=(L - 2, L - 1))


def _network(L: int, seed: int) -> Config:
    base = table1.PRESETS[f"ssm_in_nn/L{L}"]
    return replace(base, seeds=(seed,), eps=0.05, warm_init=0.0, special_positions=(L - 2, L - 1),
                   extra_steps=5000 if L == 6 else 20_000)


_TEACHER_DIM_SEEDS = {6: {2: 302, 3: 401, 4: 403}, 10: {2: 1202, 3: 1201, 4: 1201}}


# The staircase's per-size choices (sd_A, lr, max_steps, baseline_stop, seeds); why each, and what the
# alternatives gave: docs/findings/dynamics.md. baseline_stop: positions 0..stop-1 constrain
# h_L .. h_{L-stop+1}. seeds: separated_seeds(preset) (checked by a test), the same for d* = 2, 3, 4.
STAIRCASE_BY_L = {
    6: dict(sd_A=0.01, lr=0.01, max_steps=1_000_000, baseline_stop=3, seeds=(0, 1, 2, 3)),
    10: dict(sd_A=1e-3, lr=0.001, max_steps=5_000_000, baseline_stop=7, seeds=(0, 1, 3, 4)),
}
# The staircase presets use the first seeds whose top d*+1 initial entries are at least this far apart
# (relative gap): greedy learning takes entries in the order of their initial magnitudes, and two that
# start closer take off together (docs/findings/dynamics.md, "Seeds").
STAIRCASE_MIN_GAP = 0.01


def _staircase(d_star: int, L: int) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    # our choices were made with the jax.random streams and the diagonal-only rate (docs/findings/dynamics.md)
    return replace(base, data_rng="jax", init_rng="jax", full_kernel=False,
                   teacher_a=STAIRCASE_TEACHER[:d_star], train_BC=False, tie_init=False, warm_init=0.0, eps=1e-6,
                   special_positions=(L - 2,), error_from=2, **STAIRCASE_BY_L[L])


def _authors_teacher_dim(d_star: int, L: int) -> Config:
    base = table1.PRESETS[f"beyond_theorem/L{L}"]
    return replace(base, seeds=(_TEACHER_DIM_SEEDS[L][d_star],), teacher_a=STAIRCASE_TEACHER[:d_star], train_BC=False,
                   warm_init=0.0, sd_A=0.01, sd_BC=0.01 if L == 6 else 0.001, eps=0.01,
                   lr=0.01 if L == 6 else 0.001, diff=0.05 / math.exp((2 if L == 6 else 3) * math.log10(1 / 0.01)),
                   special_positions=(L - 2,), error_from=2)


PRESETS: dict[str, Config] = {}
PRESETS.update(teacher_student.special_pair("standalone/L6", _standalone(6, 105, sd_A=0.01, sd_BC=0.01, eps=0.01)))
PRESETS.update(teacher_student.special_pair("standalone/L10", _standalone(10, 4000, sd_A=1e-3, sd_BC=0.05, eps=0.05)))
PRESETS.update(teacher_student.special_pair("network/L6", _network(6, 4541)))
PRESETS.update(teacher_student.special_pair("network/L10", _network(10, 4542)))
for _d in (2, 3, 4):
    for _L in (6, 10):
        PRESETS.update(teacher_student.special_pair(f"teacher_dim{_d}/L{_L}", _staircase(_d, _L)))
for _d in (2, 3, 4):
    for _L in (6, 10):
        PRESETS.update(teacher_student.special_pair(f"authors/teacher_dim{_d}/L{_L}", _authors_teacher_dim(_d, _L)))
# the authors' learning rates with special sequences
PRESETS["network/L6/special"] = replace(PRESETS["network/L6/special"], lr=0.001)
PRESETS["network/L10/special"] = replace(PRESETS["network/L10/special"], lr=5e-5, extra_steps=5000)
for _d in (2, 3, 4):
    PRESETS[f"authors/teacher_dim{_d}/L6/special"] = replace(PRESETS[f"authors/teacher_dim{_d}/L6/special"], lr=0.001)
    PRESETS[f"teacher_dim{_d}/L10/special"] = replace(PRESETS[f"teacher_dim{_d}/L10/special"], max_steps=1_000_000)


@in_float64
def run(config: Config) -> Record:
    """Train every seed (Table 1's loop) and add the docs/science.md §3 summary numbers."""
    record = teacher_student.run(config)
    record.metrics.update(teacher_student.summarize(record.arrays, n_top=max(4, config.teacher_dim)))
    return record


footprint_bytes = teacher_student.footprint_bytes  # the memory estimate (runtime.footprint.check)
footprint_terms = teacher_student.footprint_terms
