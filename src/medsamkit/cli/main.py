"""The ``medsamkit`` command: one verb per task, each a thin wrapper over a library function.

Errors a user can cause are printed as one line (``medsamkit: error: FILE: problem``) with exit
code 2 and no traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import sys

from .. import __version__
from ..errors import MedsamkitError
from . import demo, fit, inspect_cache, models, preprocess, segment
from . import compare, evaluate, serve

VERBS = (segment, models, demo, preprocess, inspect_cache, fit, evaluate, compare, serve)


class _Parser(argparse.ArgumentParser):
    """Usage errors (bad option value, missing argument) on one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"medsamkit: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medsamkit",
        description="Segment-Anything-family models for medical images (LiteMedSAM, MedSAM, SAM).",
    )
    parser.add_argument("--version", action="version", version=f"medsamkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose or args.debug else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("medsamkit: %(message)s" if level > logging.DEBUG else "%(name)s: %(message)s"))
    root = logging.getLogger("medsamkit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _tolerant_streams() -> None:
    """Tables and messages use a few non-ASCII signs (±, –); a terminal with an ASCII locale shows
    them escaped instead of the command failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


#: a value that starts with a minus sign and holds a comma: a coordinate list, never an option
_NEGATIVE_LIST = re.compile(r"^-\d*\.?\d+(e-?\d+)?,")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string (of the parser and its verbs) that takes a value."""
    names: set[str] = set()
    for action in parser._actions:  # argparse keeps no public list of them
        if action.option_strings and action.nargs != 0:
            names.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names |= _value_options(sub)
    return names


def join_negative_values(argv: list[str], value_options: set[str]) -> list[str]:
    """``--box -3,6,429,337`` -> ``--box=-3,6,429,337``.

    argparse reads a separate value starting with "-" as an option unless it is a single
    negative number, so boxes, clicks and windows with a negative first coordinate (as read off
    a viewer; boxes are then clipped to the image) would be refused. A comma-separated list after
    an option that takes a value is that option's value, so it is joined to it.
    """
    out: list[str] = []
    for token in argv:
        if out and out[-1] in value_options and _NEGATIVE_LIST.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(argv, _value_options(parser)))
    if args.verb is None:
        parser.print_help()
        return 2
    _configure_logging(args)
    try:
        return int(args.run(args) or 0)
    except MedsamkitError as exc:
        if args.debug:
            raise
        # one line even when a wrapped third-party message spans several
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"medsamkit: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medsamkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
