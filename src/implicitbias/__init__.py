"""implicitbias: the implicit bias of structured SSMs and its clean-label poisoning (NeurIPS 2025).

The public API, re-exported here (docs/design.md, "Modules"): the record of a run, the numerical
core (SSMs, metrics, gradient flow, the training loop and its stopping rule, optimisers, statistics),
the sequence classifiers and their training, the poisoning attack, the language models of the
Mamba knockout with their checkpoint loader and the knockout itself, and the task modules and
experiment registry as subpackages (``implicitbias.tasks.teacher_student``,
``implicitbias.experiments.get("table1")``). Everything else is reachable under its module.

Importing the package changes nothing in JAX. The papers' numbers are computed with JAX's 64-bit
mode on (the per-Theorem flow runs to t ~ 1e13 from entries of size 1e-3); every experiment's
``run`` switches it on, and code that calls the library's functions directly calls
:func:`enable_float64` first (:mod:`implicitbias.core.precision`). Float32 runs ask for it per
config (``dtype="float32"``).
"""

__version__ = "0.1.0"

from . import core, datasets, defend, interp, models, poison, tasks  # noqa: E402
from .core.flow import FlowProblem, FlowResult, solve_flow  # noqa: E402
from .core.metrics import effective_rank, extrapolation_error, gamma_coefficients, relative_l2_error  # noqa: E402
from .core.precision import enable_float64, float64_enabled  # noqa: E402
from .core.optim import StopRule, adaptive_gd, group_rmsprop, keras_adam  # noqa: E402
from .core.sequences import baseline_sequences, gaussian_sequences, special_sequences  # noqa: E402
from .core.ssm import (  # noqa: E402
    DiagonalSSM,
    FullKernelSSM,
    SSMNet,
    impulse_response,
    network_teacher,
    per_theorem_teacher,
    ssm_output,
    unit_teacher,
)
from .core.stats import holm, mean_std, t_interval, t_test_pvalue  # noqa: E402
from .core.train import TrainResult, train, train_batched  # noqa: E402
from .interp.knockout import exempt_masks, knockout_logits, layer_windows  # noqa: E402
from .models import ClassifierConfig, SequenceClassifier, make_classifier  # noqa: E402
from .models.checkpoints import load_lm, save_lm  # noqa: E402
from .models.lm import MambaLM, make_lm  # noqa: E402
from .models.transformer import TransformerLM, make_transformer  # noqa: E402
from .models.training import TrainConfig  # noqa: E402
from .poison import BrewConfig, assemble, craft_poisons, energy_share  # noqa: E402
from .record import Record, config_hash, config_to_dict, strict_json  # noqa: E402

__all__ = [
    "__version__",
    # record
    "Record", "config_hash", "config_to_dict", "strict_json",
    # core: SSMs and their data
    "DiagonalSSM", "FullKernelSSM", "SSMNet", "impulse_response", "ssm_output", "unit_teacher",
    "per_theorem_teacher", "network_teacher", "gaussian_sequences", "baseline_sequences", "special_sequences",
    # core: metrics, flow, training, statistics
    "extrapolation_error", "relative_l2_error", "effective_rank", "gamma_coefficients",
    "FlowProblem", "FlowResult", "solve_flow",
    "StopRule", "TrainResult", "train", "train_batched", "adaptive_gd", "keras_adam", "group_rmsprop",
    "mean_std", "t_interval", "t_test_pvalue", "holm", "enable_float64", "float64_enabled",
    # sequence classifiers and the attack
    "ClassifierConfig", "SequenceClassifier", "make_classifier", "TrainConfig",
    "BrewConfig", "craft_poisons", "assemble", "energy_share",
    # language models and the knockout (docs/science.md §6)
    "MambaLM", "make_lm", "TransformerLM", "make_transformer", "load_lm", "save_lm",
    "knockout_logits", "layer_windows", "exempt_masks",
    # subpackages
    "core", "datasets", "defend", "interp", "models", "poison", "tasks",
]
