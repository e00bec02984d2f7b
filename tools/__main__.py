"""`python -m tools <command>`: the offline engine's command line."""

from __future__ import annotations

import argparse
import gc
import sys

from tools import bootstrap_command, check, cost_command, diff_command, plan_command

# Each command module exposes add_parser(subparsers) and run(args) -> exit code.
COMMANDS = [plan_command, check, diff_command, cost_command, bootstrap_command]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools",
        description="Plan, check, diff and price a Pulumi stack offline: no cloud, no Pulumi CLI.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


def exit_now(code: int) -> None:
    """Exit a command-line run. What is still allocated (a whole plan) lives until the end
    anyway: frozen, it is spared the interpreter's final collections, about a second of a
    prod plan's four."""
    gc.freeze()
    sys.exit(code)


def cli() -> None:
    """The `signal-platform` command (pyproject.toml's [project.scripts]): `python -m tools`."""
    exit_now(main())


if __name__ == "__main__":
    cli()
