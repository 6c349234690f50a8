"""Wall time of the full chain-identification table (6 rows x 3 seeds), compile included.

Runs ``implicitbias run chains`` in a fresh process and a fresh store with the persistent compile
cache switched off, then prints the report and the wall time. The target is under 30 minutes on a
2-core CPU; the machine's load average is printed before and after, because a shared CPU slows it.
Pass ``--runs-dir DIR`` to keep the runs (default: a temporary directory).
"""

import os
import subprocess
import sys
import tempfile
import time


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


if __name__ == "__main__":
    keep = sys.argv[sys.argv.index("--runs-dir") + 1] if "--runs-dir" in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        runs = keep or tmp
        env = dict(os.environ, IMPLICITBIAS_JAX_CACHE="")
        print(f"cpus: {os.cpu_count()}, load average before: {_load()}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "implicitbias.cli", "run", "chains", "--runs-dir", runs, "--force"],
                       check=True, env=env)
        wall = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "implicitbias.cli", "report", "--runs-dir", runs], check=True, env=env)
    print(f"\nload average after: {_load()}")
    print(f"chains table (6 rows x 3 seeds) wall time, compile included, no compile cache: {wall:.1f} s")
