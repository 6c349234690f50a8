"""implicitbias: the implicit bias of structured SSMs and its clean-label poisoning (NeurIPS 2025).

The synthetic experiments need float64 (the per-Theorem flow runs to t ~ 1e13 from entries of
size 1e-3), so double precision is switched on when the package is imported.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
