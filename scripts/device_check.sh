#!/usr/bin/env bash
# The GPU check a session runs the moment it is lent a device (< 8 min on one H100; nothing to prepare there):
#   bash scripts/device_wheels.sh && bash scripts/device_check.sh --dry-run   # HERE: fetch .whl/, check the plan
#   run(command='bash scripts/device_check.sh', carry=['.whl'], timeout_s=540)  # THERE (or: make device-check)
# It prints nvidia-smi and the JAX devices (fails without a GPU backend), runs the GPU-relevant tests, then one
# full-size seed of realworld authors/s4d/mnist1d; results in $OUT/device_check.json (+ .log, pytest.xml, run.tar.gz).
#
# Details. The device has no network and no .venv: the packages its image lacks come from .whl/ (made here by
# scripts/device_wheels.sh, checked against .whl/MANIFEST), installed with `pip install --no-deps --target` into
# a folder that shadows the image's copies; PYTHONPATH = src + that folder. JAX/jaxlib/CUDA are the IMAGE's
# (0.11.2 + CUDA 13 when last read, not the project's pin 0.10.2; 210 MiB do not fit a call): the JSON records
# every version that ran. Every step has a timeout cut from one overall budget (DC_BUDGET_S, default 450 s), so a
# hang cannot eat the 10-minute device call; the tests get at most 150 s, the full seed what is left (~280 s).
# Time basis (results/realworld-sweep.json, docs/findings/realworld.md): on the lent H100, S4D digits seeds at
# width 32 x 2 with 2,500-4,600 training steps and 2,000 brew steps took 10-16 s each; the full preset (128 x 4)
# does 13,600-35,800 training steps (100 epochs; each of 3 retrainings up to 200 extra) and 4,000 brew steps on
# 40-step sequences: ~4-10x the training at twice the depth, ~2x the brew, plus compilation: about 2-4 min. The
# tests take 106 s on 2 shared CPU cores here (mostly compilation). Expect the whole check in 4-7 min.
#
# Knobs (environment): DC_PYTHON (device python; python3), DC_WHEELS (.whl), DC_TESTS (the pytest selection;
# empty: none, the seed gets the whole budget), DC_SEED (0), DC_SET ("k=v k=v": --set overrides, smoke runs
# only), DC_BUDGET_S (450), DC_ALLOW_CPU=1 (no GPU needed: try the real path on a CPU), DC_SKIP_INSTALL=1 (no
# wheels: DC_PYTHON's own packages), OUT (the results folder; /tmp/device-check-out where unset).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
IN_MAIN=0
# the error, then (for real) device_check.json with what ran so far
die() { echo "device_check: error: $*" >&2; (( IN_MAIN )) && { echo "device_check: error: $*" >>"$WORK/error"; summarize || true; }; exit 2; }

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$arg' (the only options are --dry-run and --help)" ;;
    esac
done

PRESET=authors/s4d/mnist1d
EXPERIMENT=realworld
SEED=${DC_SEED:-0}
# GPU-relevant tests: the SSM kernels and models (S4D FFT/recurrence, LRU, Mamba2 chunked scan, float32 vs
# float64), training (scans, AdamW, determinism), gradient matching (second-order autodiff) and the authors'
# protocol pieces (augmentation, restarts, groups). Not test_realworld.py: the full seed below runs that path.
TESTS=${DC_TESTS-tests/test_models.py tests/test_ssm.py tests/test_optim_train.py tests/test_poison.py tests/test_realworld_authors.py}
read -r -a TEST_ARGS <<<"$TESTS"
read -r -a SET_KV <<<"${DC_SET:-}"
SET_ARGS=()
for kv in "${SET_KV[@]}"; do SET_ARGS+=(--set "$kv"); done
WHEELS=${DC_WHEELS:-.whl}
PY=${DC_PYTHON:-python3}
[[ -z ${DC_PYTHON:-} && -x /opt/torch/.venv/bin/python3 ]] && PY=/opt/torch/.venv/bin/python3  # the image's
BUDGET=${DC_BUDGET_S:-450}
RUN_CMD=(-m implicitbias run "$EXPERIMENT" --preset "$PRESET" --exact --seeds "$SEED" "${SET_ARGS[@]}")
PYTEST_CMD=(-m pytest -q -p no:cacheprovider "${TEST_ARGS[@]}")  # pyproject.toml: -m "not slow and not ray"

wheel_files() { grep -v '^#' "$WHEELS/MANIFEST" | awk '{print $2}'; }

# sha256 of every wheel against MANIFEST, nothing missing or extra (works without .venv: the device)
verify_wheels() {
    [[ -f $WHEELS/MANIFEST ]] || die "$WHEELS/MANIFEST missing: run 'bash scripts/device_wheels.sh' here first (it downloads the wheels the device lacks), then carry '.whl' in the device call"
    (cd "$WHEELS" && grep -v '^#' MANIFEST | sha256sum --quiet -c -) || die "$WHEELS: a wheel does not match MANIFEST: re-run 'bash scripts/device_wheels.sh'"
    [[ $(wheel_files | sort) == "$(cd "$WHEELS" && ls -1 -- *.whl 2>/dev/null | sort)" ]] \
        || die "$WHEELS holds wheels not in MANIFEST (or lacks some): re-run 'bash scripts/device_wheels.sh'"
}

# ------------------------------------------------------------------------------------------------ dry run
if (( DRY )); then
    LPY=${DC_LOCAL_PYTHON:-$ROOT/.venv/bin/python}
    [[ -x $LPY ]] || die "$LPY not found: run 'make install' first (the dry run checks with .venv), or set DC_LOCAL_PYTHON"
    echo "device_check --dry-run: the plan (nothing heavy runs now)"
    echo "  python on the device: $PY (image: /opt/torch/.venv/bin/python3, CPython 3.12); JAX, jaxlib, CUDA: the image's"
    if [[ ${DC_SKIP_INSTALL:-0} == 1 ]]; then
        echo "  wheels: none (DC_SKIP_INSTALL=1: $PY's own packages)"
    else
        verify_wheels
        if [[ $WHEELS == .whl ]]; then
            DC_LOCAL_PYTHON=$LPY bash scripts/device_wheels.sh --check || exit 2
        fi
        echo "  wheels: $(wheel_files | wc -l) from $WHEELS/MANIFEST ($(du -sm "$WHEELS" | cut -f1) MiB), sha256 OK, installed there with"
        echo "    $PY -m pip install --no-index --no-deps --target /tmp/device-check.XXXXXX/site $WHEELS/*.whl;  PYTHONPATH=src:that folder"
        wheel_files | sed 's/^/    /'
        if [[ ${DC_DRY_INSTALL:-1} == 1 ]]; then  # the same install for CPython 3.12 manylinux, into a scratch folder
            site=$(mktemp -d /tmp/device-check-dry.XXXXXX)
            "$LPY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
                --python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$WHEELS"/*.whl 2>&1 \
                | grep -v "^WARNING: Location" ; rc=${PIPESTATUS[0]}
            rm -rf "$site"
            (( rc == 0 )) || die "the wheels do not install for CPython 3.12 manylinux x86-64 (pip exit $rc)"
            echo "    (a --target install of these for CPython 3.12 manylinux x86-64 succeeded here)"
        fi
    fi
    echo "  steps (one budget of ${BUDGET} s; each step's timeout is cut from what is left):"
    echo "    1. nvidia-smi; JAX version and devices (exit 2 unless the backend is gpu)"
    echo "    2. tests: PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $PY ${PYTEST_CMD[*]} --junitxml=\$OUT/pytest.xml   (<= 150 s)"
    echo "    3. one full-size seed: $PY ${RUN_CMD[*]} --runs-dir /tmp/device-check.XXXXXX/runs   (what is left, ~280 s)"
    echo "    4. \$OUT/device_check.json: versions, device, test summary, the seed's wall time and metrics; + device_check.log, pytest.xml, run.tar.gz"
    # the preset exists and is the full size (not the CPU one)
    PYTHONPATH=$ROOT/src "$LPY" - "$EXPERIMENT" "$PRESET" "${SET_KV[@]}" <<'EOF' || die "preset check failed"
import sys
from implicitbias.experiments import realworld
from implicitbias.runtime.overrides import apply_overrides, parse_overrides
exp, name, *sets = sys.argv[1:]
if name not in realworld.PRESETS:
    sys.exit(f"device_check: error: preset {name} is not in experiment {exp}")
cfg = realworld.PRESETS[name]
if sets:
    cfg = apply_overrides(cfg, parse_overrides(realworld.Config, sets))
keys = ("model", "dataset", "d_model", "n_layers", "epochs", "iterations", "restarts", "n_train", "batch_size")
print(f"  preset {exp} {name}: " + ", ".join(f"{k}={getattr(cfg, k)}" for k in keys))
EOF
    # the test selection exists and collects
    if [[ -z $TESTS ]]; then
        echo "  tests: none (DC_TESTS is empty)"
        echo "device_check --dry-run: OK. On the device: run(command='bash scripts/device_check.sh', carry=['$WHEELS'], timeout_s=540)"
        exit 0
    fi
    n=$("$LPY" "${PYTEST_CMD[@]}" --collect-only 2>&1 | tee /tmp/device-check-collect.$$ | sed -n 's/^\([0-9][0-9]*\) tests\{0,1\} collected.*/\1/p; s/^\([0-9][0-9]*\)\/[0-9]* tests collected.*/\1/p' | tail -1)
    if [[ -z $n || $n == 0 ]]; then
        tail -20 /tmp/device-check-collect.$$ >&2; rm -f /tmp/device-check-collect.$$
        die "the test selection '$TESTS' collects no tests"
    fi
    rm -f /tmp/device-check-collect.$$
    echo "  tests: $n collected from: $TESTS"
    echo "device_check --dry-run: OK. On the device: run(command='bash scripts/device_check.sh', carry=['$WHEELS'], timeout_s=540)"
    exit 0
fi

# ------------------------------------------------------------------------------------------------ for real
OUT=${OUT:-/tmp/device-check-out}
mkdir -p "$OUT" || die "cannot make $OUT"
LOG=$OUT/device_check.log
WORK=$(mktemp -d /tmp/device-check.XXXXXX)
START=$(date +%s)
STORE=$WORK/runs
STEPS=$WORK/steps.tsv
: >"$STEPS"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME CAP CMD...: run CMD with timeout min(CAP, budget left - 15 s); record rc and seconds
step() {
    local name=$1 cap=$2; shift 2
    local t rc t0
    t=$(( $(left) - 15 )); (( t > cap )) && t=$cap
    if (( t < 10 )); then
        echo "== $name: skipped, the budget is spent"; printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 0 >>"$STEPS"; return 1
    fi
    echo "== $name (timeout ${t} s; $(( $(date +%s) - START )) s since start)"
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$t" "$@"; rc=$?
    local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    (( rc == 124 || rc == 137 )) && echo "== $name: TIMED OUT after ${t} s"
    echo "== $name: exit $rc, ${dt} s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$t" >>"$STEPS"
    return "$rc"
}

main() {
    IN_MAIN=1
    echo "device_check: $(date -u +%FT%TZ) on $(uname -n), budget ${BUDGET} s, results in $OUT"
    local pyexe
    pyexe=$(command -v "$PY") || die "python '$PY' not found (set DC_PYTHON)"
    echo "python: $pyexe ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    export PYTHONPATH=$ROOT/src PYTHONUNBUFFERED=1
    if [[ ${DC_SKIP_INSTALL:-0} != 1 ]]; then
        verify_wheels
        step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "$WHEELS"/*.whl || die "installing $WHEELS failed"
        export PYTHONPATH=$ROOT/src:$WORK/site
    fi
    step nvidia-smi 20 nvidia-smi || echo "device_check: nvidia-smi failed or is absent"
    step jax-devices 90 "$PY" - <<'EOF' || { [[ ${DC_ALLOW_CPU:-0} == 1 ]] || die "no GPU backend for JAX (see above)"; }
import os, sys, time
import jax, jax.numpy as jnp
from importlib.metadata import version
print("jax", jax.__version__, "| jaxlib", version("jaxlib"))
print("default backend:", jax.default_backend(), "| devices:", jax.devices())
t = time.perf_counter()
x = jnp.ones((2048, 2048), jnp.float32)
float((x @ x).block_until_ready()[0, 0])
print(f"a 2048^2 float32 matmul (with compilation): {time.perf_counter() - t:.2f} s")
if jax.default_backend() != "gpu" and os.environ.get("DC_ALLOW_CPU") != "1":
    sys.exit("device_check: error: JAX's backend is " + jax.default_backend() + ", not gpu")
EOF
    # tests: no plugins from the image (its pytest-cov/benchmark/... against the carried pytest), one process
    if [[ -n $TESTS ]]; then
        step tests 150 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 IMPLICITBIAS_JAX_CACHE="$WORK/jax-tests" \
            "$PY" "${PYTEST_CMD[@]}" --junitxml="$OUT/pytest.xml"
    else
        echo "== tests: skipped (DC_TESTS is empty)"
    fi
    local t_left; t_left=$(( $(left) - 15 ))
    (( t_left < 240 )) && echo "device_check: warning: only ${t_left} s left for the full seed"
    step "full-seed" 600 env IMPLICITBIAS_JAX_CACHE="$WORK/jax-run" "$PY" "${RUN_CMD[@]}" --runs-dir "$STORE"
    if compgen -G "$STORE/$EXPERIMENT/*/metrics.json" >/dev/null; then
        tar -czf "$OUT/run.tar.gz" -C "$STORE" "$EXPERIMENT" && echo "stored run: $OUT/run.tar.gz (tar -xzf it into a runs/ folder)"
    fi
    summarize
}

summarize() {
    "$PY" - "$STEPS" "$OUT" "$STORE" "$EXPERIMENT" "$PRESET" "$SEED" "$TESTS" "$START" "${DC_SET:-}" <<'EOF'
import json, os, platform, subprocess, sys, time
import xml.etree.ElementTree as ET
steps_f, out, store, experiment, preset, seed, tests, start, sets = sys.argv[1:]
res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
       "platform": platform.platform(), "python": sys.version.split()[0], "python_exe": sys.executable,
       "preset": f"{experiment} {preset}", "seed": int(seed), "overrides": sets.split(), "steps": {}}
for line in open(steps_f):
    name, rc, sec, limit = line.rstrip("\n").split("\t")
    res["steps"][name] = {"exit": rc if rc == "skipped" else int(rc), "seconds": float(sec), "timeout_s": int(limit),
                          "timed_out": rc in ("124", "137")}
res["total_seconds"] = round(time.time() - int(start), 1)
err_f = os.path.join(os.path.dirname(steps_f), "error")
res["error"] = open(err_f).read().strip() if os.path.exists(err_f) else None
from importlib import metadata
vers = {}
for n in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "numpy", "scipy", "equinox",
          "optax", "diffrax", "scikit-learn", "sktime", "mnist1d", "pytest", "typer", "pydantic"):
    try:
        vers[n] = metadata.version(n)
    except metadata.PackageNotFoundError:
        pass
res["versions"] = vers
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20)
    res["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
except Exception as e:
    res["nvidia_smi"] = f"unavailable: {e}"
try:
    import jax
    res["jax_backend"] = jax.default_backend()
    res["device"] = jax.devices()[0].device_kind
except Exception as e:
    res["jax_backend"] = f"error: {e}"
xml = os.path.join(out, "pytest.xml")
if os.path.exists(xml):
    s = ET.parse(xml).getroot()
    s = s.find("testsuite") if s.tag == "testsuites" else s
    t = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    t["passed"] = t["tests"] - t["failures"] - t["errors"] - t["skipped"]
    t["seconds"] = float(s.get("time", 0))
    t["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in s.iter("testcase")
                   if c.find("failure") is not None or c.find("error") is not None]
    t["slowest"] = sorted(((round(float(c.get("time", 0)), 1), f"{c.get('classname')}::{c.get('name')}")
                           for c in s.iter("testcase")), reverse=True)[:5]
    res["tests"] = t
res["test_selection"] = tests
try:
    from implicitbias.runtime.store import Store
    runs = list(Store(store).runs(experiment)) if os.path.isdir(store) else []
    if runs:
        r = runs[0]
        m = r.metrics
        one = lambda k: (m.get(k) or [None])[0] if isinstance(m.get(k), list) else m.get(k)
        run = {"wall_seconds": r.meta.get("wall_seconds"), "backend": (r.meta.get("versions") or {}).get("backend"),
               "clean_train_s": one("clean_train_s"), "brew_s": one("brew_s")}
        for v in ("clean", "poisoned", "uniform", "end"):
            run[v] = {k: one(f"{v}_{k}") for k in ("test_acc", "train_acc", "target_acc", "rounds", "fits", "time_s")}
        run["poisoned_minus_clean_test_error"] = run["clean"]["test_acc"] - run["poisoned"]["test_acc"]
        run["poisoned_minus_uniform_test_error"] = run["uniform"]["test_acc"] - run["poisoned"]["test_acc"]
        run["brew_objective_mean"] = one("brew_objective_mean")
        run["poisoned_last_row_ratio"] = one("poisoned_last_row_ratio")
        run["poisoned_energy_share"] = one("poisoned_energy_share")
        run["config"] = {k: r.config.get(k) for k in ("d_model", "n_layers", "epochs", "iterations", "restarts",
                                                      "n_train", "batch_size")}
        res["run"] = run
    else:
        res["run"] = None
except Exception as e:
    res["run"] = f"error reading the store: {e}"
ok = res["error"] is None and all(s["exit"] == 0 for k, s in res["steps"].items() if k != "nvidia-smi") and isinstance(res["run"], dict)
if tests.strip():  # a selection ran: it must have passed
    ok = ok and res.get("tests", {}).get("failures", 1) == 0 and res.get("tests", {}).get("errors", 1) == 0
res["ok"] = ok
json.dump(res, open(os.path.join(out, "device_check.json"), "w"), indent=1, default=str)
print("== summary (" + os.path.join(out, "device_check.json") + ")")
print(f"device: {res.get('device')} | nvidia-smi: {res['nvidia_smi']} | jax {vers.get('jax')} on {res['jax_backend']}")
for k, s in res["steps"].items():
    print(f"  step {k:11s} exit {s['exit']!s:7s} {s['seconds']:7.1f} s" + ("  TIMED OUT" if s["timed_out"] else ""))
t = res.get("tests")
if t:
    print(f"tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped "
          f"in {t['seconds']:.1f} s" + (f"; failed: {', '.join(t['failed'])}" if t["failed"] else ""))
run = res["run"]
if isinstance(run, dict):
    print(f"{preset} seed {seed}: wall {run['wall_seconds']:.1f} s (clean training {run['clean_train_s']:.1f} s, "
          f"brew {run['brew_s']:.1f} s) on {run['backend']}")
    print("  test accuracy: " + "  ".join(f"{v} {100 * run[v]['test_acc']:.2f}%" for v in ("clean", "poisoned", "uniform", "end"))
          + "  | retraining fits: " + " ".join(f"{v}={run[v]['fits']}({run[v]['rounds']} extra)"
                                             for v in ("poisoned", "uniform", "end")))
else:
    print(f"{preset} seed {seed}: no stored run ({run})")
print(f"total {res['total_seconds']:.0f} s; device_check: {'OK' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
}

main "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
