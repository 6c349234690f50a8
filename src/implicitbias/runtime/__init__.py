"""Running experiments (docs/design.md, "Store", "Execution backends", "Runner"): the store of run
directories (``store``), the local and Ray backends (``backends``, ``ray_watchdog``), the runner
that skips finished runs (``runner``), ``--set``/``--sweep`` overrides and preset selection
(``overrides``) and memory estimates (``footprint``). It knows experiments only through the
``Experiment`` protocol and records only through :mod:`implicitbias.record`.
"""
