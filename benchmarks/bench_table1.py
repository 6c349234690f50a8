"""Wall time of the whole Table 1 (12 cells x 4 seeds), compile included, in a fresh store.

Runs in a fresh process with the persistent compilation cache switched off, so the figure is what
a first ``make run`` costs after install. For scale: the authors' implementation needs about 6 ms
per step on a 2-core CPU and about 47 minutes for the same table.
"""

import os
import subprocess
import sys
import tempfile
import time

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as runs:
        env = dict(os.environ, IMPLICITBIAS_JAX_CACHE="")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "implicitbias.cli", "run", "table1", "--runs-dir", runs], check=True, env=env)
        wall = time.perf_counter() - start
        subprocess.run([sys.executable, "-m", "implicitbias.cli", "report", "--runs-dir", runs], check=True, env=env)
    print(f"\nTable 1 (12 cells x 4 seeds) wall time, compile included, no compile cache: {wall:.1f} s")
