"""Find a module-level constant such as `DEFAULT_LORA_RANK = 8` in a Python file and rewrite only its value.

"Module level" means not inside a `def`, `lambda` or `class`: an assignment nested in a module-level
`if`, `try`, `with`, `for` or `while` still runs when the module is imported, so it counts. A name must
be bound exactly once there (plain `X = 8`, annotated `X: int = 8`; `X += 1`, `X, Y = 8, 16` and
`X = Y = 8` are bindings too, but only the first two forms can be rewritten), and its value must be
an int literal. Everything but the literal's characters stays byte-identical: line endings (LF, CRLF,
CR), the source encoding and its BOM, comments and spacing.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

from trainers.errors import RanksweepError

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Binding:
    """One module-level binding of the name: where it is and, if rewritable, its int value and span.

    `start`/`end` are character offsets of the value literal in the decoded text (None if not rewritable).
    """

    line: int
    form: str
    value_source: str | None
    value: int | None
    start: int | None
    end: int | None


def is_identifier(name: str) -> bool:
    """True for a plain Python name (ASCII), the only kind of constant we rewrite."""
    return bool(_IDENTIFIER.fullmatch(name))


def _decode(source: bytes, label: str) -> tuple[str, str]:
    """The source as text (newlines untouched) and the encoding to write it back with."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
        return source.decode(encoding), encoding
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        raise RanksweepError(f"{label} cannot be decoded as Python source ({exc}); save it as UTF-8.") from None


def _line_starts(text: str) -> list[int]:
    """Character offset where each physical line starts (ast's newlines: LF, CRLF and a lone CR)."""
    starts, pos = [], 0
    for match in _LINE.finditer(text):
        starts.append(pos)
        pos = match.end()
    starts.append(pos)
    return starts


def _offset(text: str, starts: list[int], lineno: int, col_utf8: int) -> int:
    # ast columns count UTF-8 bytes of the line, whatever the file's encoding.
    line_start = starts[lineno - 1]
    line = text[line_start : starts[lineno]] if lineno < len(starts) else text[line_start:]
    return line_start + len(line.encode("utf-8")[:col_utf8].decode("utf-8"))


def _module_level(body: list[ast.stmt]):
    """Yield statements that run on import: the body and nested blocks, but not defs or classes."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _module_level(getattr(stmt, field, []))
        for handler in getattr(stmt, "handlers", []):
            yield from _module_level(handler.body)
        for case in getattr(stmt, "cases", []):
            yield from _module_level(case.body)


def _names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _names(elt)]
    if isinstance(target, ast.Starred):
        return _names(target.value)
    return []


def _int_literal(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def find_bindings(source: bytes, name: str, *, label: str) -> list[Binding]:
    """All module-level bindings of `name` in a Python file's bytes, in source order (label names the file)."""
    text, _ = _decode(source, label)
    try:
        tree = ast.parse(text, filename=label)
    except SyntaxError as exc:
        raise RanksweepError(f"{label} is not valid Python (line {exc.lineno}: {exc.msg}); fix it first.") from None
    starts = _line_starts(text)
    found = []
    for stmt in _module_level(tree.body):
        if isinstance(stmt, ast.Assign) and any(name in _names(t) for t in stmt.targets):
            simple = len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            form = "assignment" if simple else "chained or unpacking assignment"
            found.append(_binding(text, starts, stmt, stmt.value if simple else None, form))
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and _names(stmt.target) == [name]:
            found.append(_binding(text, starts, stmt, stmt.value, "annotated assignment"))
        elif isinstance(stmt, ast.AugAssign) and _names(stmt.target) == [name]:
            found.append(_binding(text, starts, stmt, None, "augmented assignment"))
    return found


def _binding(text: str, starts: list[int], stmt: ast.stmt, value: ast.expr | None, form: str) -> Binding:
    if value is None:
        return Binding(stmt.lineno, form, None, None, None, None)
    start = _offset(text, starts, value.lineno, value.col_offset)
    end = _offset(text, starts, value.end_lineno, value.end_col_offset)
    return Binding(stmt.lineno, form, text[start:end], _int_literal(value), start, end)


def _nested_lines(source: bytes, name: str) -> list[int]:
    """Lines where `name` is assigned anywhere (the module level had none), to point the user at them."""
    tree = ast.parse(_decode(source, "")[0])
    return sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name
                   and isinstance(n.ctx, ast.Store)})


def _the_binding(source: bytes, name: str, label: str) -> Binding:
    found = find_bindings(source, name, label=label)
    if not found:
        nested = _nested_lines(source, name)
        where = f" (only inside a function or class: {', '.join(f'{label}:{n}' for n in nested)})" if nested else ""
        raise RanksweepError(
            f"{label} has no module-level assignment to {name}{where}; "
            f"name the right constant with --sft-var/--rft-var FILE:NAME."
        )
    if len(found) > 1:
        where = ", ".join(f"{label}:{b.line}" for b in found)
        raise RanksweepError(
            f"{name} is assigned {len(found)} times at module level ({where}); keep one assignment and export again."
        )
    binding = found[0]
    if binding.value_source is None:
        raise RanksweepError(
            f"{label}:{binding.line} sets {name} by {binding.form}; write it as `{name} = <number>` and export again."
        )
    if binding.value is None:
        raise RanksweepError(
            f"{label}:{binding.line} sets {name} to `{binding.value_source}`, not a whole-number literal; "
            f"write it as `{name} = <number>` and export again."
        )
    return binding


def read_constant(source: bytes, name: str, *, label: str) -> int:
    """The int value of the single module-level `name = <int>` in a file's bytes."""
    return _the_binding(source, name, label).value


def set_constant(source: bytes, name: str, value: int, *, label: str) -> bytes:
    """The file's bytes with only `name`'s int literal changed to `value` (the same bytes if it already holds it)."""
    binding = _the_binding(source, name, label)
    if binding.value == value:
        return source
    text, encoding = _decode(source, label)
    return (text[: binding.start] + str(int(value)) + text[binding.end :]).encode(encoding)
