"""scripts/device_check.sh --dry-run: the plan a session runs on a lent GPU is checked here, on a CPU
(a fake wheel folder stands in for .whl/; the real one is made by scripts/device_wheels.sh)."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"
pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash and sha256sum"
)


def fake_wheels(folder: Path, names=("aaa-1.0-py3-none-any.whl", "bbb-2.0-py3-none-any.whl")) -> Path:
    folder.mkdir()
    lines = ["# wheels for scripts/device_check.sh (fake, for tests)"]
    for n in names:
        data = f"not a real wheel: {n}".encode()
        (folder / n).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {n}")
    (folder / "MANIFEST").write_text("\n".join(lines) + "\n")
    return folder


def dry_run(wheels: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DC_"))}
    env.update(DC_WHEELS=str(wheels), DC_DRY_INSTALL="0", DC_LOCAL_PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow  # 8 s; moved to make test-all to keep the fast suite under 180 s
def test_dry_run_prints_the_plan_and_checks_preset_and_tests(tmp_path):
    wheels = fake_wheels(tmp_path / "whl")
    r = dry_run(wheels, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "aaa-1.0-py3-none-any.whl" in out and "bbb-2.0-py3-none-any.whl" in out  # the wheels to install
    assert "-m implicitbias run realworld --preset authors/s4d/mnist1d --exact --seeds 0" in out
    # the preset exists and is the full size, not authors-cpu's
    assert re.search(r"preset realworld authors/s4d/mnist1d: .*d_model=128, n_layers=4, epochs=100", out), out
    m = re.search(r"tests: (\d+) collected from: (.+)", out)
    assert m and int(m.group(1)) > 0, out
    for path in m.group(2).split():
        assert (ROOT / path).is_file(), path
    assert "run(command='bash scripts/device_check.sh'" in out


def test_a_bad_flag_is_refused(tmp_path):
    r = dry_run(tmp_path, "--bogus")
    assert r.returncode == 2
    assert "unknown argument '--bogus'" in r.stderr


def test_without_wheels_it_says_to_run_device_wheels(tmp_path):
    r = dry_run(tmp_path / "absent", "--dry-run")
    assert r.returncode == 2
    assert "MANIFEST missing" in r.stderr and "bash scripts/device_wheels.sh" in r.stderr


def test_a_wheel_that_does_not_match_its_manifest_is_refused(tmp_path):
    wheels = fake_wheels(tmp_path / "whl")
    (wheels / "aaa-1.0-py3-none-any.whl").write_bytes(b"changed")
    r = dry_run(wheels, "--dry-run")
    assert r.returncode == 2
    assert "does not match MANIFEST" in r.stderr
