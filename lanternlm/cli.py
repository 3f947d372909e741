"""`lantern <command>`: the command line. Thin by design.

Each command parses its flags into a stage config (see :mod:`lanternlm.config`)
and calls one library function. Heavy imports (torch) happen inside the handlers
so that ``lantern --help`` stays instant. To add a command, write an
``_add_<name>(sub)`` function below and list it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__
from .errors import LanternError
from .log import set_verbosity

# --------------------------------------------------------------------------- commands


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register an ``_add_<name>(sub)`` function that adds one subcommand."""
    COMMANDS.append(fn)
    return fn


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lantern",
        description="lanternlm: build, train, fine-tune, run and see inside a language model.")
    parser.add_argument("--version", action="version", version=f"lanternlm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_verbosity(quiet=args.quiet, debug=args.debug)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except LanternError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
