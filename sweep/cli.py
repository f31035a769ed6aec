"""`ranksweep` command line: parse, dispatch to sweep/commands/<name>.py, turn user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings

from sweep.commands import command_modules
from sweep.commands.common import mask_url
from trainers.errors import RanksweepError
from trainers.models import silence_library_bars


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one `--help` away), like every other ranksweep error."""

    def error(self, message: str):
        # "argument --rank: '0' is not valid..." reads better as "--rank '0' is not valid...".
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)
        self.exit(2, f"ranksweep: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ranksweep",
        description="Find the LoRA ranks that buy the most accuracy for a fixed file-size budget: an Optuna "
        "study trains and grades SFT/RFT adapter pairs under a zipped-size limit and reports the Pareto frontier.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in command_modules():
        module = importlib.import_module(f"sweep.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library deprecation chatter is for their developers, not for ranksweep's users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", message=".*(is an experimental feature|is experimental)")
    if getattr(args, "no_progress", False):  # every bar, the libraries' included (model conversion, loading)
        silence_library_bars()
    try:
        return int(args.run(args) or 0)
    except RanksweepError as exc:
        # A storage URL in the message (the library's or ours) never shows its password.
        print(f"ranksweep: error: {mask_url(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only folder, a path through a file: the user's to fix
        where = f" ({exc.filename})" if exc.filename else ""
        print(mask_url(f"ranksweep: error: cannot read or write{where}: {exc.strerror or exc}."), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ranksweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
