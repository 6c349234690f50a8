"""The numerical core (docs/design.md, "Modules"): diagonal and full-kernel SSMs (``ssm``), input
sequences (``sequences``), the papers' metrics (``metrics``), the authors' Keras initialisation
stream (``keras_init``), gradient flow (``flow``), optimisers and the stopping rule (``optim``), the
one compiled training loop (``train``), statistics (``stats``), config validation (``validate``) and
progress events (``progress``). Nothing here imports anything above it.
"""
