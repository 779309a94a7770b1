"""Run every benchmark (`make bench`), or those whose names contain the given words.

Each bench/bench_*.py is a script that prints its own figures (and, where a peer
exists, the peer's figures and the ratio); this runner only runs them in order
and stops at the first that fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(w in s.stem for w in argv)]
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"=== {script.name}: exit {rc}, {time.monotonic() - started:.0f} s ===", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
