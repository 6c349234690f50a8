"""Clean-label poisoning by gradient matching (docs/science.md §4), generic over Equinox models.

* :mod:`.matching`: target direction, matching loss (cosine over all parameters), end-of-sequence
  penalty, energy share, :func:`craft_poisons` (sign-Adam, step decay, restarts, ℓ∞ projection);
* :mod:`.groups`: target groups with the loss-based allocation of poisons;
* :mod:`.assemble`: the poisoned training set ("duplicate" or "replace");
* :mod:`.retrain`: retraining from the same initialisation until the poisoned model fits as well;
* :mod:`.controls`: same-norm random perturbations (the controls of every poisoning effect);
* :mod:`.synthetic`: the attack against the teacher-student SSM of Table 1 (validation).
"""

from .assemble import PoisonedSet, assemble
from .groups import (GroupBrew, TargetGroup, allocate_groups, allocate_top_groups, craft_groups,
                     per_example_cross_entropy, target_stats)
from .matching import (BrewConfig, BrewResult, box_bounds, craft_poisons, end_penalty, end_penalty_weights,
                       energy_share, matching_loss, param_grad, project, target_direction, tree_cosine)
from .retrain import TrainOutcome, retrain

__all__ = [
    "BrewConfig", "BrewResult", "GroupBrew", "PoisonedSet", "TargetGroup", "TrainOutcome",
    "allocate_groups", "allocate_top_groups", "assemble", "box_bounds", "craft_groups", "craft_poisons",
    "end_penalty", "end_penalty_weights", "energy_share", "matching_loss", "param_grad", "per_example_cross_entropy",
    "project", "retrain", "target_direction", "target_stats", "tree_cosine",
]
