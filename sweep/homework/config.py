"""What homework mode needs to know about a user's tree, read from `DIR/ranksweep.toml` (table [homework]).

Every key has the course template's value as its default, so a tree in the template's shape needs no
file at all; another project that ships LoRA adapters names its own loader, benchmark and commands.
Commands are shell-like strings split with shlex; `{python}` is the interpreter ranksweep runs on,
`{zip}` the submission zip a trial builds, `{name}` its name without `.zip`.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from trainers.data import checked_number
from trainers.errors import RanksweepError

CONFIG_FILE = "ranksweep.toml"
TABLE = "homework"


@dataclass(frozen=True)
class HomeworkConfig:
    """Module paths (`module:attribute`), files, commands and timeouts (seconds) of a homework tree."""

    sft_loader: str = "homework.sft:load"
    rft_loader: str = "homework.rft:load"
    dataset: str = "homework.data:Dataset"
    split: str = "valid"
    benchmark: str = "homework.data:benchmark"
    checkpoint: str = "homework/base_llm.py:checkpoint"  # FILE:NAME of the module-level base model string
    sft_rank: str = "homework/sft.py:DEFAULT_LORA_RANK"
    rft_rank: str = "homework/rft.py:RFT_LORA_RANK"
    train_sft: str = "{python} -m homework.sft train"
    train_rft: str = "{python} -m homework.rft train"
    bundle: str = "{python} bundle.py homework {name}"  # used when the tree has bundle.py
    grader: str = "{python} -m grader {zip}"  # used when the tree has grader/
    valid_data: str = "data/valid.json"  # what ranksweep's own grader reads for the same questions
    grade_timeout_s: float = 1800.0
    train_timeout_s: float = 7200.0
    grader_timeout_s: float = 3600.0

    def command(self, key: str, **values: str) -> list[str]:
        """The command `key` as an argument list, with {python}, {zip} and {name} filled in."""
        template = getattr(self, key)
        try:
            parts = shlex.split(template)
        except ValueError as exc:
            raise RanksweepError(f"{CONFIG_FILE}: {key} = {template!r} is not a valid command line ({exc}).") from None
        if not parts:
            raise RanksweepError(f"{CONFIG_FILE}: {key} is empty; give the command to run.")
        try:
            return [part.format(**values) for part in parts]
        except (KeyError, IndexError, ValueError) as exc:
            raise RanksweepError(f"{CONFIG_FILE}: {key} = {template!r} names an unknown field {exc}; "
                                 "use {python}, {zip} or {name}.") from None


def read_config(root: Path) -> HomeworkConfig:
    """The tree's settings: defaults, overridden by `[homework]` in DIR/ranksweep.toml when that file exists."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        return HomeworkConfig()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RanksweepError(f"{path} is not valid TOML ({exc}); fix it or remove it.") from None
    table = document.get(TABLE, {})
    if not isinstance(table, dict):
        raise RanksweepError(f"{path}: [{TABLE}] must be a table of settings.")
    known = {f.name: f for f in fields(HomeworkConfig)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise RanksweepError(f"{path}: unknown setting(s) {', '.join(unknown)} in [{TABLE}]; "
                             f"known ones are {', '.join(known)}.")
    values = {}
    for key, value in table.items():
        default = getattr(HomeworkConfig, key)
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RanksweepError(f"{path}: {key} must be a number of seconds greater than 0, not {value!r}.")
            value = checked_number(value, f"{path}: {key}")  # TOML's inf and nan are numbers too
            if not value > 0:
                raise RanksweepError(f"{path}: {key} must be a number of seconds greater than 0, not {value!r}.")
        elif not isinstance(value, str) or not value.strip():
            raise RanksweepError(f"{path}: {key} must be a non-empty string, not {value!r}.")
        values[key] = value
    return HomeworkConfig(**values)
