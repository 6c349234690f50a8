# All set-up happens here: a fresh machine needs only Python 3.11 and pip.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: run test test-all test-ray bench bench-all bench-ray sweep-realworld install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	@touch $(RAY_STAMP)

## make run: reproduce Table 1 (its 12 cells and the float64 variants, 4 seeds each) and the dynamics figures, then
## write the report.
run: $(STAMP)
	$(BIN)/implicitbias run table1
	$(BIN)/implicitbias run dynamics
	$(BIN)/implicitbias report

## make test: the linter, then the fast suite on every core (pytest-xdist; checks real numbers; under 5 minutes
## on 2 cores, install included). One file alone: .venv/bin/python -m pytest tests/test_table1.py
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -n logical

## make test-all: the fast suite plus the slow full reproductions (the Ray tests have make test-ray).
test-all: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -n logical -m 'not ray'

## make test-ray: the tests that start a real local Ray instance (--backend ray: same records as local, a
## killed worker retried, Ctrl-C, --address, the bench_backend smoke; 5 minutes on 2 loaded cores, see
## docs/findings/ray-backend.md). Installs the ray extra.
test-ray: $(RAY_STAMP)
	$(BIN)/python -m pytest -q -m ray

## make bench: speed figures (steps/s per seed, full Table 1 wall time).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_table1.py

## make bench-all: every benchmark (adds chains, models, synthetic poisoning: several more minutes).
bench-all: bench
	$(BIN)/python benchmarks/bench_chains.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_poison_synthetic.py

## make bench-ray: the overhead of --backend ray against local on a 64-run grid (installs the ray extra).
bench-ray: $(RAY_STAMP)
	$(BIN)/python benchmarks/bench_backend.py

## make bench-torch: the authors-cpu/s4d/mnist1d victim trained in JAX beside the same S4D classifier in plain
## PyTorch (same steps, ratio), then one full seed of brew + retrain (installs the optional extra bench-torch,
## torch==2.13.0; 17 minutes on 2 shared cores, see README; BENCH_TORCH_ARGS=--quick: epochs and iterations / 5).
## make test-hf: the Mamba checkpoint loader and the knockout against transformers' own Mamba-1 / Falcon-Mamba /
## Mamba-2 (installs the optional extra hf: torch + transformers; tests/test_checkpoints_hf.py).
.PHONY: test-hf
test-hf: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,hf]'
	$(BIN)/python -m pytest -q tests/test_checkpoints_hf.py tests/test_checkpoints.py tests/test_knockout.py

## make test-rl: GRPO through TRL on a tiny random Llama and a tokenizer built in code, and the greedy test
## accuracy (installs the optional extra rl: torch + transformers + trl; tests/test_equations_hf.py).
.PHONY: test-rl
test-rl: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,rl]'
	$(BIN)/python -m pytest -q tests/test_equations_hf.py tests/test_equations.py

.PHONY: bench-torch
bench-torch: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench-torch]'
	$(BIN)/python benchmarks/bench_torch_s4d.py $(BENCH_TORCH_ARGS)

## make sweep-realworld: the real-world lever sweep (scripts/sweep_realworld.py: 47 stored runs of 5 seeds,
## resumable; about 3 CPU-hours on 2 cores). On a Ray cluster (README, "Sweeps on a Ray cluster"):
## make sweep-realworld SWEEP_ARGS='--backend ray --address auto --cpus-per-run 2'.
sweep-realworld: $(STAMP)
	$(BIN)/python scripts/sweep_realworld.py $(SWEEP_ARGS)
	$(BIN)/implicitbias report

## make knockout: the Mamba knockout on tiny Mamba-1, Mamba-2 and transformer LMs trained here (paper/* presets,
## 3 seeds each; about an hour on 2 idle cores; a finished preset is stored and skipped), then
## results/knockout.json and the report (docs/findings/knockout.md).
.PHONY: knockout
knockout: $(STAMP)
	$(BIN)/implicitbias run knockout --preset paper
	$(BIN)/python scripts/export_runs.py knockout --presets paper/mamba1 paper/mamba2 paper/transformer
	$(BIN)/implicitbias report

## make device-check: on a machine with a GPU (the lent device: run(command='bash scripts/device_check.sh',
## carry=['.whl'], timeout_s=540)), nvidia-smi, JAX's devices, the GPU-relevant tests and one full-size
## authors/s4d/mnist1d seed in under 8 minutes; results in $OUT/device_check.json. First, here: bash
## scripts/device_wheels.sh, then bash scripts/device_check.sh --dry-run (the plan, checked; nothing heavy).
.PHONY: device-check
device-check:
	bash scripts/device_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
