"""The CLI as a user runs it: `python -m sweep` in a process of its own (run_cli), or `sweep.cli.main` in this
one (run_main). The `cli` and `ranksweep` fixtures (conftest.py) hand these out."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run `python -m sweep ARGS` in a subprocess and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sweep", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 0):
    """`ranksweep ARGS` in this process (`sweep.cli.main`, what `python -m sweep` runs), as a CompletedProcess.

    No interpreter start, no second torch import and the tiny model's files stay cached: several seconds less
    per call than `run_cli`, for tests that need the command's behaviour but not a process of its own."""
    from sweep.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # usage errors exit from the parser
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["ranksweep", *map(str, args)], code, out.getvalue(), err.getvalue())
