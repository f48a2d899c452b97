"""Run every benchmark with its default (budget-sized) settings, one after another; print their JSON.

python -m benchmarks.run_all [--only train ingest ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS = ("generate", "ingest", "validate", "features", "materialize", "train", "serving", "quality")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        # One process per benchmark: each measures a budget alone, without another's warm caches.
        result = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}"], check=False)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
