"""Dispatch `python -m bench NAME [args]` to bench/NAME.py:main."""

from __future__ import annotations

import importlib
import sys

import flows  # noqa: F401  (offline, quiet environment)
from bench import BENCHES


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ + "\nprotocols: " + ", ".join(BENCHES) + ", all")
        return
    name, rest = argv[0], argv[1:]
    for bench in (BENCHES if name == "all" else (name,)):
        module = importlib.import_module(f"bench.{BENCHES.get(bench, bench)}")
        module.main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
