"""`make bench`: run every benchmarks/bench_*.py, then regenerate docs/benchmarks.md.

    python -m benchmarks                     # every benchmark
    python -m benchmarks bench_cog bench_... # only these (the page is rewritten anyway)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from benchmarks import summary

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    print(summary.write())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
