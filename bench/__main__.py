"""`python -m bench [NAME ...] [--quick]`: run benchmarks (all by default) and print the ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench
from bench.harness import argument_parser

# Benchmarks with their own command line (`python -m bench.NAME --help`) run here at these sizes;
# docs/benchmarks.md gives the full-size commands behind each recorded result.
MAIN_ARGS = {
    "analytics": {"quick": ["--jobs", "20000", "--samples", "50"],
                  "default": ["--jobs", "200000"]},
    "billing": {"quick": ["--events", "100000", "--runs", "10", "--raw-runs", "1"],
                "default": ["--events", "1000000"]},
    "citus_rls": {"quick": ["--clients", "10", "--rows", "1000", "--runs", "100"],
                  "default": []},
    "rollups": {"quick": ["--small", "20000", "--large", "40000", "--rounds", "2", "--fresh", "3"],
                "default": []},
}


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                  if not m.name.startswith("_") and m.name != "harness")


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench", __doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        if hasattr(module, "run"):
            module.run(quick=args.quick)
        else:
            module.main(MAIN_ARGS.get(name, {}).get("quick" if args.quick else "default", []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
