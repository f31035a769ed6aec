"""`ranksweep export`: write a study's chosen ranks (and optionally its adapters) into a homework tree,
or into a JSON/TOML file for any project that reads its LoRA settings from a config file."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from sweep.commands.common import add_storage, budget_mb, check_output
from sweep.export import (Change, DEFAULT_RFT_VAR, DEFAULT_SFT_VAR, ZipCheck, adapter_changes, apply, check_base_model,
                          check_tree, choose, parse_var, rank_changes, study_name, zip_check)
from sweep.homework.check import export_warnings
from sweep.homework.tree import checkpoint_model
from sweep.sizing import DEFAULT_BUDGET_MB, budget_bytes, size_text
from trainers.data import parse_json
from trainers.errors import RanksweepError
from trainers.training import KINDS

CONFIG_KEYS = ("sft", "rft", "adapter_dtype", "study", "trial", "size_bytes", "points")
TABLE_KEYS = ("rank", "lora_alpha")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write the chosen ranks (and adapters) into a homework tree or a JSON/TOML config file",
        description="Take a study's recommended pair (or --trial N) and rewrite the rank constants in the "
        "homework's code (only the numbers change), optionally copying the pair's trained adapters into "
        "homework/sft_model and homework/rft_model. Every change is printed as a diff; replaced files are "
        "backed up under DIR/.ranksweep/backups/ first, and every write is checked before the first one (a "
        "write that still fails puts the others back). The submission zip is built in memory first: an export "
        "that would put it over the budget writes nothing unless --force (then exits 1). With --to FILE.json|FILE.toml the ranks, "
        "alphas and adapter dtype are written to a config file instead.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--homework", type=Path, metavar="DIR", help="homework root: the folder that holds homework/")
    target.add_argument("--to", type=Path, metavar="FILE", help="write a .json or .toml config file instead")
    p.add_argument("--study", help="study name (default: the storage's only study)")
    add_storage(p)
    p.add_argument("--trial", type=int, metavar="N", help="export COMPLETE trial N instead of the recommended pair")
    p.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    p.add_argument("--with-adapters", action="store_true",
                   help="also copy the pair's adapter_model.safetensors and adapter_config.json into the homework")
    p.add_argument("--sft-var", metavar="FILE:NAME",
                   help="where the SFT rank lives, FILE relative to DIR (default: homework/sft.py:DEFAULT_LORA_RANK)")
    p.add_argument("--rft-var", metavar="FILE:NAME",
                   help="where the RFT rank lives (default: homework/rft.py:RFT_LORA_RANK)")
    p.add_argument("--base-model",
                   help="the base model the homework's adapters must be trained on (default: the ones named in "
                   "homework/*_model/adapter_config.json and by the checkpoint line of homework/base_llm.py); "
                   "--with-adapters refuses a study trained on another")
    p.add_argument("--budget-mb", type=budget_mb,
                   help="zipped submission limit in MiB, bytes/1024/1024 (default: the study's budget, else "
                   f"{DEFAULT_BUDGET_MB:g})")
    p.add_argument("--force", action="store_true",
                   help="write even when the submission zip would be over the budget (the exit code is then 1)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.to is not None:
        homework_only = [f for f, v in (("--with-adapters", args.with_adapters), ("--sft-var", args.sft_var),
                                        ("--rft-var", args.rft_var), ("--base-model", args.base_model),
                                        ("--budget-mb", args.budget_mb), ("--force", args.force)) if v]
        if homework_only:
            raise RanksweepError(f"Drop {', '.join(homework_only)}: with --to FILE only --study, --storage, --trial "
                                 f"and --dry-run apply.")
        return export_config(args)
    return export_homework(args)


def export_homework(args: argparse.Namespace) -> int:
    root = args.homework
    sft_var, rft_var = parse_var(args.sft_var or DEFAULT_SFT_VAR), parse_var(args.rft_var or DEFAULT_RFT_VAR)
    check_tree(root, sft_var, rft_var)
    choice = choose(args.storage, study_name(args.storage, args.study), args.trial)
    changes = rank_changes(root, sft_var, rft_var, choice.sft_rank, choice.rft_rank)
    if args.with_adapters:
        check_base_model(root, choice, args.base_model, checkpoint_model(root))
        changes += adapter_changes(root, choice)
    if args.budget_mb:
        budget = budget_bytes(args.budget_mb)
    else:
        budget = int(choice.budget_bytes) if choice.budget_bytes else budget_bytes(DEFAULT_BUDGET_MB)

    check = zip_check(root, budget, pending=changes)  # measured before anything is written
    if check.over and changes and not args.dry_run and not args.force:
        raise RanksweepError(f"This export would make the submission zip {size_text(check.size_bytes)}, over the "
                             f"{size_text(budget)} budget, so nothing was written: export a smaller pair "
                             "(ranksweep report lists them), or pass --force to write it anyway.")
    print(choice.summary())
    _report_changes(changes, args.dry_run, lambda: apply(root, changes), root)
    if changes and not args.with_adapters:
        print("adapters not copied (use --with-adapters): retrain them with the new ranks before you submit")
    if args.with_adapters:  # graded again by the homework's own code, where the tree can (sweep/homework/check.py)
        for warning in export_warnings(root, args.storage, choice.study, choice):
            print(f"warning: {warning}")
    # Once written, the tree holds exactly the planned bytes: the zip measured above is the real one.
    print(ZipCheck(check.size_bytes, check.budget_bytes, planned=bool(changes) and args.dry_run).line())
    return 1 if check.over else 0


def _report_changes(changes, dry_run: bool, write, root: Path) -> None:
    for change in changes:
        print(change.describe())
    if not changes:
        print("already up to date: nothing to change")
    elif dry_run:
        print(f"dry run: {len(changes)} file(s) would change; nothing written")
    else:
        backup = write()
        where = f"; previous versions in {backup.relative_to(root)}" if backup else ""
        print(f"wrote {len(changes)} file(s){where}")


def export_config(args: argparse.Namespace) -> int:
    path: Path = args.to
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("json", "toml"):
        raise RanksweepError(f"--to {path} must end in .json or .toml.")
    if path.parent.exists() and not path.parent.is_dir():
        raise RanksweepError(f"Cannot write --to '{path}': '{path.parent}' is a file, not a folder; write the config "
                             "elsewhere.")
    if not path.parent.is_dir():
        raise RanksweepError(f"Folder {path.parent} does not exist; create it or write the config elsewhere.")
    if path.is_dir():
        raise RanksweepError(f"--to {path} is a folder; name a .{fmt} file.")
    old = path.read_bytes() if path.exists() else None
    if old is not None:
        _check_ours(path, old, fmt)
    if not args.dry_run:  # writability, before the study is read
        check_output(path, "--to", ours=lambda _: True, what=f"a ranksweep .{fmt} export")
    choice = choose(args.storage, study_name(args.storage, args.study), args.trial)
    payload = config_payload(choice)
    new = (render_json(payload) if fmt == "json" else render_toml(payload)).encode("utf-8")
    changes = [] if new == old else [Change(path.name, old, new)]
    print(choice.summary())
    _report_changes(changes, args.dry_run, lambda: apply(path.parent, changes, backup=False), path.parent)
    return 0


def config_payload(choice) -> dict:
    """The config-file document: ranks and alphas per adapter, dtype, and where they came from (bytes, points)."""

    def alpha(value):
        return int(value) if isinstance(value, float) and value.is_integer() else value

    return {
        "sft": {"rank": choice.sft_rank, "lora_alpha": alpha(choice.sft_alpha)},
        "rft": {"rank": choice.rft_rank, "lora_alpha": alpha(choice.rft_alpha)},
        "adapter_dtype": choice.adapter_dtype or "fp32",
        "study": choice.study,
        "trial": choice.trial,
        "size_bytes": choice.size_bytes,
        "points": choice.points,
    }


def render_json(payload: dict) -> str:
    """The payload as indented JSON (missing values as null)."""
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def render_toml(payload: dict) -> str:
    """The payload as TOML: scalars first, then [sft] and [rft] tables (TOML has no null: missing keys are left out)."""
    scalars = [f"{k} = {_toml(v)}" for k, v in payload.items() if not isinstance(v, dict) and v is not None]
    tables = [f"\n[{k}]\n" + "".join(f"{tk} = {_toml(tv)}\n" for tk, tv in v.items() if tv is not None)
              for k, v in payload.items() if isinstance(v, dict)]
    return "# written by ranksweep export\n" + "\n".join(scalars) + "\n" + "".join(tables)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A TOML basic string: escape quotes, backslashes and every control character.
    text = "".join(c if c not in '"\\' and ord(c) >= 0x20 and ord(c) != 0x7F else f"\\u{ord(c):04X}"
                   for c in str(value))
    return f'"{text}"'


def _check_ours(path: Path, data: bytes, fmt: str) -> None:
    """Refuse to overwrite a config file that holds settings other than the ones export writes."""
    try:
        doc = parse_json(data) if fmt == "json" else tomllib.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # tomllib, too, recurses once per nested array
        doc = None
    extra = None if not isinstance(doc, dict) else (
        [k for k in doc if k not in CONFIG_KEYS]
        + [f"{t}.{k}" for t in KINDS if isinstance(doc.get(t), dict) for k in doc[t] if k not in TABLE_KEYS])
    if extra is None or extra:
        held = f"other settings ({', '.join(extra)})" if extra else f"something that is not a ranksweep .{fmt} export"
        raise RanksweepError(f"{path} holds {held}; export to a new file and read it from your config.")
