"""The homework fixture tree (tests/homework_tree, the course template's shape) and what tests do with it:
copy it with another prompt format, and hash it to show that ranksweep never wrote into it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

FIXTURE = Path(__file__).parent / "homework_tree"
# A chat-style prompt, as many students' format_prompt builds one: the model sees text that ranksweep's
# default (the raw question) never trains on.
CHAT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def tree_digest(root: Path) -> str:
    """sha256 over every path and byte under root (caches included: the tree must not change at all)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def homework_copy(tmp_path: Path, prompt_format: str = "{question}") -> Path:
    """The fixture tree copied to tmp_path/tree, its format_prompt returning `prompt_format`."""
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    source = tree / "homework" / "base_llm.py"
    text = source.read_text()
    assert 'PROMPT_FORMAT = "{question}"' in text
    source.write_text(text.replace('PROMPT_FORMAT = "{question}"', f"PROMPT_FORMAT = {json.dumps(prompt_format)}"))
    return tree
