#!/usr/bin/env bash
# Downloads, HERE (a machine that reaches PyPI), the wheels that scripts/device_check.sh installs on the
# GPU device machine, which reaches no network at all. Run it once before a device call:
#
#   bash scripts/device_wheels.sh               # .whl/      (~13 MiB; carry ".whl" in the device call)
#   bash scripts/device_wheels.sh --check       # no network: verify .whl/ against its MANIFEST and the pins
#
# What travels and why (see /work/.library/device/KINDS.md for the device's image):
# * The device's python3 is CPython 3.12 (/opt/torch/.venv) on x86-64 and already holds JAX 0.11.2 with
#   its CUDA 13 plugin (jax-cuda13-plugin, jax-cuda13-pjrt; driver 580 = CUDA 13.0), numpy, scipy,
#   scikit-learn, matplotlib, pandas. It LACKS sktime, scikit-base, mnist1d and pydantic (typer 0.29 needs it).
# * .whl/ holds, for CPython 3.12 / manylinux x86-64, the packages it lacks plus the project's pure-Python
#   pins (equinox, optax, diffrax, optimistix, typer, rich, pytest ...), each at the version pyproject.toml
#   pins or, for an unpinned dependency, the version installed in this checkout's .venv (what `make install`
#   resolved from those pins). Installed on the device with --no-deps into a --target folder that
#   shadows the image's own copies.
# * NOT in .whl/: jax/jaxlib and the CUDA plugin. The project pins jax==0.10.2 (jax[cuda13]: jaxlib
#   85 MB + jax-cuda13-pjrt 124 MB + jax-cuda13-plugin 7 MB + jax 3 MB = ~210 MiB), but one device call
#   carries at most 64 MiB (working tree included), so the device check runs on the image's JAX
#   (0.11.2 + CUDA 13 when last read) and records that version in device_check.json.
# numpy, scipy, scikit-learn, matplotlib, pandas stay the image's (compiled against the image's numpy;
# too large to carry beside everything else); device_check.json lists every version that ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

die() { echo "device_wheels: error: $*" >&2; exit 2; }

CHECK_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --check) CHECK_ONLY=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

LOCAL_PY=${DC_LOCAL_PYTHON:-$ROOT/.venv/bin/python}
[[ -x $LOCAL_PY ]] || die "$LOCAL_PY not found: run 'make install' first (the versions come from that .venv), or set DC_LOCAL_PYTHON"

# The distributions carried in .whl/ (names as pip knows them). Missing on the device: sktime,
# scikit-base, mnist1d, pydantic, pydantic-core, annotated-types, typing-inspection.
CARRY=(
    sktime scikit-base mnist1d
    equinox optax diffrax optimistix lineax jaxtyping wadler-lindig
    typer pydantic pydantic-core annotated-types typing-inspection annotated-doc shellingham
    rich markdown-it-py mdurl typing-extensions
    pytest pluggy iniconfig pytest-xdist execnet
)

# name==version for each name: pyproject.toml's pin where it has one, else the version in .venv.
pins() {
    "$LOCAL_PY" - "$@" <<'EOF'
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version

norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
pinned = {}
for r in reqs:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*", r)
    if m:
        pinned[norm(m.group(1))] = m.group(3)
for name in sys.argv[1:]:
    n = norm(name)
    if n in pinned:
        v = pinned[n]
    else:
        try:
            v = version(name)
        except PackageNotFoundError:
            sys.exit(f"device_wheels: error: {name} is neither pinned in pyproject.toml nor installed in .venv")
    print(f"{n}=={v}")
EOF
}

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {  # download DEST SPEC...
    local dest=$1; shift
    "$LOCAL_PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$dest" "$@"
}

# verify DIR: every wheel in DIR/MANIFEST is there with its sha256, nothing else, one version per name.
verify() {
    local dir=$1
    [[ -f $dir/MANIFEST ]] || die "$dir/MANIFEST missing: run 'bash scripts/device_wheels.sh'"
    (cd "$dir" && grep -v '^#' MANIFEST | sha256sum --quiet -c -) || die "$dir: a wheel does not match MANIFEST (re-run device_wheels.sh)"
    local listed present
    listed=$(grep -v '^#' "$dir/MANIFEST" | awk '{print $2}' | sort)
    present=$(cd "$dir" && ls -1 -- *.whl | sort)
    [[ $listed == "$present" ]] || die "$dir holds wheels not in MANIFEST (or lacks some): re-run device_wheels.sh"
}

if (( CHECK_ONLY )); then
    verify .whl
    want=$(pins "${CARRY[@]}")
    got=$(grep '^# spec ' .whl/MANIFEST | awk '{print $3}' | sort)
    [[ $(sort <<<"$want") == "$got" ]] || die ".whl/ was made for other versions than pyproject.toml/.venv now give: re-run device_wheels.sh"
    echo "device_wheels: .whl/ OK ($(grep -vc '^#' .whl/MANIFEST) wheels, $(du -sm .whl | cut -f1) MiB)"
    exit 0
fi

mapfile -t SPECS < <(pins "${CARRY[@]}")
echo "device_wheels: downloading ${#SPECS[@]} wheels for CPython 3.12 manylinux x86-64 into .whl/"
tmp=$(mktemp -d /tmp/device-wheels.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
download "$tmp" "${SPECS[@]}"
{
    echo "# wheels for scripts/device_check.sh (made by scripts/device_wheels.sh on $(date -u +%FT%TZ))"
    for s in "${SPECS[@]}"; do echo "# spec $s"; done
    (cd "$tmp" && sha256sum -- *.whl)
} >"$tmp/MANIFEST"
n_whl=$(ls -1 "$tmp"/*.whl | wc -l)
(( n_whl == ${#SPECS[@]} )) || die "expected ${#SPECS[@]} wheels, pip saved $n_whl"
rm -rf .whl
mv "$tmp" .whl
trap - EXIT
verify .whl
size_mib=$(du -sm .whl | cut -f1)
echo "device_wheels: .whl/ holds $n_whl wheels, $size_mib MiB:"
sed -n 's/^# spec /  /p' .whl/MANIFEST | paste -sd' ' | fold -s -w 110
tree_mib=$(( ($(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + 1048575) / 1048576 ))
(( size_mib + tree_mib <= 60 )) || die ".whl/ ($size_mib MiB) + the working tree ($tree_mib MiB) exceed what one device call carries (64 MiB)"

echo "device_wheels: done. Device call: run(command='bash scripts/device_check.sh', carry=['.whl'], timeout_s=540)"
