"""`ranksweep rft-data`: write a homework rft.json by rejection sampling reasoning chains."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sweep.commands.common import (add_base_model, add_device, add_no_progress, check_output, positive_float, positive_int,
                                   questions_arg, seed_arg)
from trainers.data import read_rft, scratch_file
from trainers.errors import RanksweepError
from trainers.rft_data import RFTSettings, ensure_rft_data, read_report
from trainers.unitgen import builtin_data

DEFAULTS = RFTSettings()


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "rft-data",
        help="make RFT data (rft.json) by rejection sampling",
        description="Sample reasoning chains for each training question from an instruct model with a few-shot "
        "chat prompt, keep the first whose answer is correct by the grading rule, and write the homework's "
        "rft.json ([question, answer, reasoning]). Results are cached by model, training file and settings.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="rft.json to write: a new file, or an existing RFT data file with --force")
    parser.add_argument("--force", action="store_true", help="replace the RFT data file already at --out")
    add_base_model(parser)
    add_device(parser)
    parser.add_argument(
        "--train-data", type=Path, metavar="FILE", help="[question, answer] JSON (default: built-in train.json)"
    )
    # Numbers are checked in run(), so a bad value is one line like every other user error.
    parser.add_argument("--questions", default="all", metavar="N", help="use the first N questions, or 'all' (default: all)")
    parser.add_argument("--samples", default=str(DEFAULTS.samples), metavar="K",
                        help=f"completions sampled per question (default: {DEFAULTS.samples})")
    parser.add_argument("--temperature", default=str(DEFAULTS.temperature), metavar="T",
                        help=f"sampling temperature, above 0 (default: {DEFAULTS.temperature:g})")
    parser.add_argument("--max-new-tokens", default=str(DEFAULTS.max_new_tokens), metavar="N",
                        help=f"longest reasoning chain in tokens (default: {DEFAULTS.max_new_tokens})")
    parser.add_argument("--batch-size", default=str(DEFAULTS.batch_size), metavar="B",
                        help=f"sequences decoded together (default: {DEFAULTS.batch_size})")
    parser.add_argument("--seed", default=str(DEFAULTS.seed), metavar="S", help=f"sampling seed (default: {DEFAULTS.seed})")
    add_no_progress(parser)
    return parser


def _parse(text: str, flag: str, parse):
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:  # it names the value and says what would be valid
        raise RanksweepError(f"{flag} {exc}.") from None
    except ValueError as exc:
        raise RanksweepError(f"{flag} {text!r} is not valid ({exc}).") from None


def settings_from_args(args) -> RFTSettings:
    """The typed sampling settings for the command's flags (raises RanksweepError for a bad number)."""
    return RFTSettings(
        questions=_parse(args.questions, "--questions", questions_arg),
        samples=_parse(args.samples, "--samples", positive_int),
        temperature=_parse(args.temperature, "--temperature", positive_float),
        max_new_tokens=_parse(args.max_new_tokens, "--max-new-tokens", positive_int),
        seed=_parse(args.seed, "--seed", seed_arg),
        batch_size=_parse(args.batch_size, "--batch-size", positive_int),
    )


def _is_rft_file(path: Path) -> bool:
    try:
        return path.is_file() and bool(read_rft(path))
    except RanksweepError:
        return False


def run(args) -> int:
    settings = settings_from_args(args)
    out = Path(args.out)
    if out.is_dir():
        raise RanksweepError(f"--out '{out}' is a folder: give a file name such as {out / 'rft.json'}.")
    check_output(out, "--out", ours=_is_rft_file, what="an RFT data file", force=args.force)  # before sampling
    if args.train_data is None:
        train_path = builtin_data()[0]
    else:
        train_path = args.train_data
    cached = ensure_rft_data(args.base_model, args.device, train_path, settings, progress=not args.no_progress)
    rows = read_rft(cached)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = scratch_file(out)  # a killed copy's temp file is removed by the next write here
    try:
        with open(fd, "wb") as target, open(cached, "rb") as source:
            shutil.copyfileobj(source, target)
        Path(tmp).replace(out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    report = read_report(cached)
    asked = report.get("asked", len(rows))
    rate = report.get("success_rate", len(rows) / asked if asked else 0.0)
    seconds = report.get("seconds")
    timing = f" in {seconds:.0f} s when generated" if seconds is not None else ""
    print(f"Kept {len(rows)} of {asked} questions (success rate {rate:.1%}){timing}; wrote {out}.")
    return 0
