"""Bad input, one case a row: each is refused with one line on stderr, exit 2, no traceback, and the
working folder (its storage, artifacts and data) is left exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from postgres import closed_port
from study_fixtures import write_single_trial_study
from trainers.data import write_json_atomic

LAUNCH = ["launch", "--study", "s", "--base-model", "tiny", "--device", "cpu", "--preset", "quick",
          "--train-data", "train.json", "--valid-data", "valid.json", "--rft-data", "rft.json",
          "--artifacts", "art", "--no-progress"]
TRAIN = ["train", "sft", "--rank", "4", "--out", "out", "--base-model", "tiny", "--device", "cpu"]


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    """args with `flag` set to value (replaced when present, appended otherwise)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


CASES = {
    # data files
    "launch-missing-train": (with_flag(LAUNCH, "--train-data", "missing.json"), "missing.json"),
    "launch-malformed-train": (with_flag(LAUNCH, "--train-data", "malformed.json"), "malformed.json"),
    "launch-empty-train": (with_flag(LAUNCH, "--train-data", "empty.json"), "empty.json"),
    "launch-no-rows-valid": (with_flag(LAUNCH, "--valid-data", "no-rows.json"), "no-rows.json"),
    "launch-malformed-rft": (with_flag(LAUNCH, "--rft-data", "malformed.json"), "malformed.json"),
    "train-missing-data": (TRAIN + ["--train-data", "missing.json"], "missing.json"),
    "train-malformed-data": (TRAIN + ["--train-data", "malformed.json"], "malformed.json"),
    "train-empty-data": (TRAIN + ["--train-data", "empty.json"], "empty.json"),
    # ranks
    "launch-rank-zero": (LAUNCH + ["--sft-ranks", "0,2"], "0"),
    "launch-rank-not-a-number": (LAUNCH + ["--sft-ranks", "a"], "a"),
    "train-rank-zero": (with_flag(TRAIN, "--rank", "0"), "0"),
    # budget, model, storage
    "budget-below-smallest-pair": (LAUNCH + ["--budget-mb", "0.001"], "needs up to"),
    "unknown-base-model": (with_flag(LAUNCH, "--base-model", "no-such-org/no-such-model-xyz"), "no-such-model-xyz"),
    "malformed-storage-url": (LAUNCH + ["--storage", "nosuch://x"], "nosuch://x"),
    "unreachable-storage": (LAUNCH + ["--storage", "postgresql+psycopg2://ranksweep@127.0.0.1:{port}/db"],
                            "Connection refused"),
    # studies that do not exist, homework without the constants
    "status-unknown-study": (["status", "--study", "nosuch"], "nosuch"),
    "report-unknown-study": (["report", "--study", "nosuch", "--out", "report"], "nosuch"),
    "export-unknown-study": (["export", "--study", "nosuch", "--to", "ranks.json"], "nosuch"),
    "worker-unknown-study": (["worker", "--study", "nosuch"], "nosuch"),
    "export-homework-without-constants": (["export", "--study", "known", "--homework", "hw"], "hw"),
    # outputs that cannot be written: a path under a regular file (chmod does not stop root)
    "launch-artifacts-inside-a-file": (with_flag(LAUNCH, "--artifacts", "blocker/art"), "blocker/art"),
}


def fingerprint(root: Path) -> dict[str, str]:
    """Every file and folder under root with a hash of its bytes: any write shows up."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    train = [[f"How many gram are there per {n} kg?", n * 1000.0] for n in range(1, 9)]
    write_json_atomic(root / "train.json", train)
    write_json_atomic(root / "valid.json", train)
    write_json_atomic(root / "rft.json", [[q, a, f"<answer>{a:g}</answer>"] for q, a in train])
    write_json_atomic(root / "no-rows.json", [])
    (root / "malformed.json").write_text('[["How many gram are there per 2 kg?", 2000.0],')
    (root / "empty.json").write_text("")
    (root / "blocker").write_text("a regular file, not a folder\n")
    (root / "hw" / "homework").mkdir(parents=True)
    (root / "hw" / "homework" / "sft.py").write_text("def train():\n    return None\n")
    write_single_trial_study(f"sqlite:///{root}/studies.db", "known")
    return root


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_writes_nothing(cli, workdir, case):
    args, mentioned = CASES[case]
    args = [a.format(port=closed_port()) for a in args]
    before = fingerprint(workdir)
    result = cli(*args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ranksweep"), result.stderr
    assert "error:" in lines[0] and mentioned in lines[0], lines[0]
    assert fingerprint(workdir) == before
