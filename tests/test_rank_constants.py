"""Rewriting a rank constant changes only its literal: every other byte of the file stays as it was."""

from __future__ import annotations

import pytest

from sweep.rank_constants import find_bindings, read_constant, set_constant
from trainers.errors import RanksweepError

pytestmark = pytest.mark.fast  # no test here builds a model


def test_plain_assignment_keeps_comment_and_spacing():
    src = b"import peft\n\nDEFAULT_LORA_RANK = 8  # rank of the adapter\nx = DEFAULT_LORA_RANK * 2\n"
    out = set_constant(src, "DEFAULT_LORA_RANK", 32, label="homework/sft.py")
    assert out == b"import peft\n\nDEFAULT_LORA_RANK = 32  # rank of the adapter\nx = DEFAULT_LORA_RANK * 2\n"


def test_annotated_and_unspaced_assignments():
    assert set_constant(b"R: int = 8\n", "R", 4, label="f.py") == b"R: int = 4\n"
    assert set_constant(b"RFT_LORA_RANK=16\n", "RFT_LORA_RANK", 2, label="f.py") == b"RFT_LORA_RANK=2\n"
    assert set_constant(b"R = (8)\n", "R", 64, label="f.py") == b"R = (64)\n"


def test_crlf_cr_and_non_ascii_text_keep_their_bytes():
    src = "# é — ünïcode\r\nNAME = 'naïve ☃'; R = 8 # ☃\r\nprint(R)\r\n".encode("utf-8")
    out = set_constant(src, "R", 128, label="f.py")
    assert out == "# é — ünïcode\r\nNAME = 'naïve ☃'; R = 128 # ☃\r\nprint(R)\r\n".encode("utf-8")
    assert set_constant(b"a = 1\rR = 8\rb = 2\r", "R", 3, label="f.py") == b"a = 1\rR = 3\rb = 2\r"


def test_bom_and_declared_encoding_are_kept():
    bom = b"\xef\xbb\xbfR = 8\n"
    assert set_constant(bom, "R", 9, label="f.py") == b"\xef\xbb\xbfR = 9\n"
    latin = "# -*- coding: latin-1 -*-\nS = 'é'; R = 8\n".encode("latin-1")
    assert set_constant(latin, "R", 10, label="f.py") == "# -*- coding: latin-1 -*-\nS = 'é'; R = 10\n".encode("latin-1")


def test_locals_in_functions_and_classes_are_ignored_but_module_if_and_try_count():
    src = b"def f():\n    R = 1\n    return R\nclass C:\n    R = 2\ntry:\n    R = 8\nexcept ImportError:\n    pass\n"
    assert [b.line for b in find_bindings(src, "R", label="f.py")] == [7]
    assert set_constant(src, "R", 5, label="f.py") == src.replace(b"    R = 8\n", b"    R = 5\n")


def test_multiline_value_span():
    src = b"R = (\n    8\n)  # kept\n"
    assert set_constant(src, "R", 16, label="f.py") == b"R = (\n    16\n)  # kept\n"


def test_same_value_returns_the_same_bytes():
    src = b"R = 0x10\n"
    assert read_constant(src, "R", label="f.py") == 16
    assert set_constant(src, "R", 16, label="f.py") is src


def test_two_assignments_are_listed_with_their_lines():
    src = b"R = 8\nx = 1\nif x:\n    R = 16\n"
    with pytest.raises(RanksweepError, match=r"assigned 2 times .*\(hw/rft.py:1, hw/rft.py:4\)"):
        set_constant(src, "R", 4, label="hw/rft.py")


def test_missing_name_and_non_literals_are_refused():
    with pytest.raises(RanksweepError, match=r"no module-level assignment to R \(only inside a function or class: f.py:2\)"):
        set_constant(b"def f():\n    R = 8\n", "R", 4, label="f.py")
    with pytest.raises(RanksweepError, match=r"f.py:1 sets R to `int\('8'\)`"):
        set_constant(b"R = int('8')\n", "R", 4, label="f.py")
    with pytest.raises(RanksweepError, match="sets R to `True`"):
        set_constant(b"R = True\n", "R", 4, label="f.py")
    with pytest.raises(RanksweepError, match="f.py:1 sets R by chained or unpacking assignment"):
        set_constant(b"R, S = 8, 16\n", "R", 4, label="f.py")
    with pytest.raises(RanksweepError, match=r"assigned 2 times .*f.py:1, f.py:2"):
        set_constant(b"R = 8\nR += 1\n", "R", 4, label="f.py")
    with pytest.raises(RanksweepError, match="not valid Python"):
        set_constant(b"R = = 8\n", "R", 4, label="f.py")
