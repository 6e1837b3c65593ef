"""`python -m stack up|down|ps|deploy` (what `make up`, `make down`, `make ps` and `make deploy` call)."""

from __future__ import annotations

import argparse
import sys

from stack.config import SETTINGS, StackConfig, StackError
from stack.control import deploy, down, parts, timed_up
from tasks.env import stack_dir


def _recorded_or_env() -> StackConfig:
    return StackConfig.load(stack_dir().resolve()) or StackConfig.from_env()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     epilog="settings: " + "; ".join(f"{k} ({v[0] or 'unset'}): {v[1]}"
                                                                     for k, v in SETTINGS.items()))
    parser.add_argument("command", choices=["up", "down", "ps", "deploy"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(timed_up(StackConfig.from_env()), flush=True)
        elif args.command == "down":
            stopped = down(_recorded_or_env())
            print(("stopped " + ", ".join(stopped) if stopped else "nothing was running")
                  + f"; data kept in {stack_dir()}")
        elif args.command == "deploy":
            cfg = _recorded_or_env()
            deploy(cfg)
            print(f"deployments applied to {cfg.prefect_ui}")
        else:
            cfg = _recorded_or_env()
            print(f"{'part':<10} {'state':<9} {'pid':>7}  {'health':<8} where")
            for p in parts(cfg):
                print(f"{p.name:<10} {p.state:<9} {p.pid or '-':>7}  {p.health:<8} {p.url}")
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
