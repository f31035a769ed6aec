"""Scratch copies of a user's homework tree: copy it, point it at a base model, put an adapter in place.

The user's tree is only ever read. Everything homework mode runs (the tree's loader, its training and
bundle commands, its grader) runs in a copy, so a failing or half-finished command leaves nothing behind
in the user's folder.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import tempfile
import tokenize
from pathlib import Path

from sweep.bundle import ADAPTER_FILES, ADAPTER_HOMES
from sweep.homework.config import read_config
from sweep.rank_constants import find_bindings
from trainers.errors import RanksweepError
from trainers.models import cache_dir, embedded_model_dir, load_model

# Never copied: version control, caches, and ranksweep's own backups and scratch space.
SKIPPED = (".git", "__pycache__", ".ranksweep", ".pytest_cache", ".ipynb_checkpoints")


def check_homework(root: Path) -> Path:
    """The homework root, or a RanksweepError when it has no homework/ folder."""
    root = Path(root)
    if not (root / "homework").is_dir():
        raise RanksweepError(f"'{root}' has no homework/ folder; --homework takes the folder that holds homework/.")
    return root


def scratch_copy(root: Path, dest: Path) -> Path:
    """Copy the homework tree into `dest` (created; must not exist) and return it."""
    check_homework(root)
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*SKIPPED), symlinks=False)
    return Path(dest)


def split_var(text: str) -> tuple[str, str]:
    """`FILE:NAME` into its parts (FILE relative to the tree)."""
    file, sep, name = text.rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise RanksweepError(f"'{text}' is not FILE:NAME (e.g. homework/base_llm.py:checkpoint).")
    return file, name


def _string_binding(tree: Path, var: str):
    """(source bytes, the one module-level `NAME = "..."` binding) of `var` (FILE:NAME) in the tree: how homework
    mode finds the base model's checkpoint line, to point a scratch copy elsewhere or to read it."""
    file, name = split_var(var)
    path = Path(tree) / file
    if not path.is_file():
        raise RanksweepError(f"The homework has no {file}, where its base model ({name}) should be set; "
                             f"name the right FILE:NAME as `checkpoint` in ranksweep.toml.")
    source = path.read_bytes()
    bindings = find_bindings(source, name, label=file)
    strings = [b for b in bindings if b.value_source and _is_string(b.value_source)]
    if len(bindings) != 1 or len(strings) != 1:
        found = "no module-level assignment" if not bindings else f"{len(bindings)} assignments, not one string literal"
        raise RanksweepError(f"{file} has {found} to {name}; homework mode needs a single `{name} = \"...\"` "
                             f"naming the base model.")
    return source, strings[0]


def read_string_constant(tree: Path, var: str) -> str:
    """The string the module-level `NAME = "..."` named by `var` (FILE:NAME) holds, e.g. the tree's base model
    from `homework/base_llm.py:checkpoint`; a RanksweepError when there is not exactly one such literal."""
    _, binding = _string_binding(tree, var)
    return ast.literal_eval(binding.value_source)


def checkpoint_model(root: Path) -> tuple[str, str | None]:
    """(FILE:NAME, the base model) the tree's checkpoint line names (`homework/base_llm.py:checkpoint`, or
    ranksweep.toml's `checkpoint`), read as homework mode reads it; None when the tree has no such single string."""
    var = read_config(root).checkpoint
    try:
        return var, read_string_constant(root, var)
    except RanksweepError:  # not a course tree: its adapters' configs (or --base-model) say which model
        return var, None


def set_string_constant(tree: Path, var: str, value: str) -> None:
    """Rewrite the module-level `NAME = "..."` named by `var` (FILE:NAME) to hold `value`; only the literal changes."""
    file, _ = split_var(var)
    path = Path(tree) / file
    source, binding = _string_binding(tree, var)
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    text = source.decode(encoding)
    path.write_bytes((text[: binding.start] + json.dumps(value) + text[binding.end :]).encode(encoding))


def _is_string(source: str) -> bool:
    try:
        return isinstance(ast.literal_eval(source), str)
    except (ValueError, SyntaxError):
        return False


def place_adapter(tree: Path, kind: str, adapter: Path) -> Path:
    """Put the adapter's files where the homework loads them (homework/<kind>_model/), replacing what was there."""
    home = Path(tree) / ADAPTER_HOMES[kind]
    missing = [name for name in ADAPTER_FILES if not (Path(adapter) / name).is_file()]
    if missing:
        raise RanksweepError(f"Adapter folder '{adapter}' lacks {', '.join(missing)}: pass a trained PEFT adapter folder.")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(Path(adapter) / name, home / name)
    return home


def base_model_path(name: str) -> str:
    """What to write into the tree's checkpoint string for --base-model: a folder the homework's
    `from_pretrained` can read, or a hub id as it is."""
    if name == "embedded":
        return str(embedded_model_dir())
    if name == "tiny":
        return str(_tiny_folder(cache_dir() / "models" / "tiny"))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        raise RanksweepError(f"'{name}' is a GGUF file, which a homework's from_pretrained(checkpoint) cannot load; "
                             "pass a model folder, 'embedded' or a hub id.")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RanksweepError(f"Folder '{name}' has no config.json, so it is not a model folder.")
        return str(path.resolve())
    return name


def _tiny_folder(target: Path) -> Path:
    """The `tiny` test model saved once as a model folder, so a homework tree can load it by path."""
    if (target / "config.json").is_file():
        return target
    loaded = load_model("tiny", "cpu")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-"))
    try:
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process saved it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def code_fingerprint(root: Path, exclude: tuple[str, ...] = tuple(ADAPTER_HOMES.values())) -> str:
    """sha256 of every file's path and bytes in the tree, except trained adapters and caches (hex)."""
    digest = hashlib.sha256()
    root = Path(root)
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED
                         and Path(current, d).relative_to(root).as_posix() not in exclude)
        for name in sorted(files):
            path = Path(current) / name
            if name.endswith(".pyc"):
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
