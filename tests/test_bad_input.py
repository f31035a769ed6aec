"""Bad input, one case a row: each is refused with one line on stderr, exit 2, no traceback, and the
working folder (its storage, artifacts, data and every file the user named) is left exactly as it was.

The cases run the CLI in-process (`sweep.cli.main`, as `python -m sweep` does), so the table stays fast."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from postgres import closed_port
from study_fixtures import write_single_trial_study
from trainers.data import write_json_atomic

LAUNCH = ["launch", "--study", "s", "--base-model", "tiny", "--device", "cpu", "--preset", "quick",
          "--train-data", "train.json", "--valid-data", "valid.json", "--rft-data", "rft.json",
          "--artifacts", "art", "--no-progress"]
TRAIN = ["train", "sft", "--rank", "4", "--out", "out", "--base-model", "tiny", "--device", "cpu"]
FOREIGN = ("Study 'foreign' in sqlite:///studies.db was not made by ranksweep (it carries no 'ranksweep' marker); "
           "ranksweep reads and runs only its own studies")


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
    "train-out-inside-a-file": (with_flag(TRAIN, "--out", "blocker/sft"), "Cannot write --out 'blocker/sft'"),
    "rft-data-out-inside-a-file": (["rft-data", "--out", "blocker/rft.json", "--base-model", "tiny"],
                                   "Cannot write --out 'blocker/rft.json'"),
    "report-out-inside-a-file": (["report", "--study", "known", "--out", "blocker/report"],
                                 "Cannot write --out 'blocker/report'"),
    "export-to-inside-a-file": (["export", "--study", "known", "--to", "blocker/ranks.json"],
                                "Cannot write --to 'blocker/ranks.json'"),
    # non-finite and absurd numbers, refused while the command line is read
    "launch-epochs-inf": (LAUNCH + ["--epochs", "inf"],
                          "--epochs 'inf' is not valid: give an epoch count greater than 0 and at most 1000"),
    "launch-lrs-inf": (LAUNCH + ["--lrs", "1e-3,inf"],
                       "--lrs '1e-3,inf': 'inf' is not valid: give a learning rate greater than 0 and at most 1"),
    "launch-lrs-nan": (LAUNCH + ["--lrs", "nan"], "--lrs 'nan' is not valid: give a learning rate"),
    "launch-alpha-huge": (LAUNCH + ["--alpha-ratios", "1e300"], "--alpha-ratios '1e300' is not valid: give a ratio"),
    "launch-budget-inf": (LAUNCH + ["--budget-mb", "inf"], "--budget-mb 'inf' is not valid: give a budget in MiB"),
    "launch-rank-huge": (LAUNCH + ["--sft-ranks", "2,100000"], "'100000' is not valid: give a rank of at most 4096"),
    # one bound for ranks everywhere (the one `train` uses), and recovery steps bounded like epochs
    "size-rank-huge": (["size", "--base-model", "smollm2-135m", "--sft-rank", "100000", "--rft-rank", "2"],
                       "--sft-rank '100000' is not valid: give a rank of at most 4096"),
    "train-rank-huge": (with_flag(TRAIN, "--rank", "4097"), "--rank '4097' is not valid: give a rank of at most 4096"),
    "launch-recover-steps-huge": (LAUNCH + ["--strategy", "shrink", "--recover-steps", "4294967295"],
                                  "--recover-steps '4294967295' is not valid: give a whole number from 0 to 100000"),
    "launch-homework-trainer-nll": (LAUNCH + ["--trainer", "homework", "--objective", "answer-nll"],
                                    "--objective answer-nll needs ranksweep's own grading"),
    "launch-seed-negative": (LAUNCH + ["--seed", "-1", "--storage", "sqlite:///new.db"],
                             "--seed '-1' is not valid: give a whole number from 0 to 4294967295"),
    "train-lr-huge": (TRAIN + ["--lr", "1e30"], "--lr '1e30' is not valid: give a learning rate greater than 0 and "
                      "at most 1"),
    "train-epochs-inf": (TRAIN + ["--epochs", "inf"], "--epochs 'inf' is not valid"),
    "train-seed-negative": (TRAIN + ["--seed", "-1"], "--seed '-1' is not valid"),
    "rft-data-seed-negative": (["rft-data", "--out", "new-rft.json", "--seed", "-1"],
                               "--seed '-1' is not valid: give a whole number from 0 to 4294967295."),
    # hostile JSON: a number over Python's digit limit, nesting deeper than the parser's stack
    "launch-5000-digit-number": (with_flag(LAUNCH, "--train-data", "huge-number.json"),
                                 "huge-number.json' is not valid JSON (Exceeds the limit (4300 digits)"),
    "train-5000-digit-number": (TRAIN + ["--train-data", "huge-number.json"], "Exceeds the limit (4300 digits)"),
    # a 4,000-digit integer: valid JSON, within Python's digit limit, past a float's range
    "train-4000-digit-answer": (TRAIN + ["--train-data", "4000-digits.json"],
                                "4000-digits.json' entry 0's answer is an integer of 4,000 digits, too large for a "
                                "64-bit float"),
    "launch-4000-digit-answer": (with_flag(LAUNCH, "--valid-data", "4000-digits.json"),
                                 "entry 0's answer is an integer of 4,000 digits"),
    "launch-4000-digit-rft-answer": (with_flag(LAUNCH, "--rft-data", "4000-digits-rft.json"),
                                     "4000-digits-rft.json' entry 0's answer is an integer of 4,000 digits"),
    "launch-deep-nesting": (with_flag(LAUNCH, "--valid-data", "deep.json"),
                            "deep.json' is not valid JSON (nested too deeply)"),
    "train-rft-deep-nesting": (["train", "rft", "--rank", "1", "--out", "out", "--rft-data", "deep.json"],
                               "deep.json' is not valid JSON (nested too deeply)"),
    "grade-adapter-notes-deep-nesting": (["grade", "--adapter", "deep-adapter", "--base-model", "tiny"],
                                         "deep-adapter/ranksweep.json' is not a JSON object; delete it or pass --kind"),
    # a text file passed as a .gguf model
    "launch-text-as-gguf": (with_flag(LAUNCH, "--base-model", "text.gguf"), "'text.gguf' is not a GGUF model file"),
    "size-text-as-gguf": (["size", "--base-model", "text.gguf"], "'text.gguf' is not a GGUF model file"),
    "train-text-as-gguf": (with_flag(TRAIN, "--base-model", "text.gguf"), "'text.gguf' is not a GGUF model file"),
    "grade-text-as-gguf": (["grade", "--adapter", "none", "--kind", "sft", "--base-model", "text.gguf",
                            "--device", "cpu", "--valid-data", "valid.json"], "'text.gguf' is not a GGUF model file"),
    # outputs that exist and are not ranksweep's: refused before any work
    "train-out-is-a-homework": (with_flag(TRAIN, "--out", "hw"),
                                "--out 'hw' already exists and is not a ranksweep adapter folder; ranksweep never "
                                "replaces files it did not write"),
    "train-out-adapter-without-force": (with_flag(TRAIN, "--out", "adapter"),
                                        "--out 'adapter' already holds a ranksweep adapter folder; pass --force"),
    "rft-data-out-is-not-rft-data": (["rft-data", "--out", "malformed.json", "--base-model", "tiny"],
                                     "--out 'malformed.json' already exists and is not an RFT data file"),
    "rft-data-out-rft-without-force": (["rft-data", "--out", "rft.json", "--base-model", "tiny"],
                                       "--out 'rft.json' already holds an RFT data file; pass --force"),
    "report-out-holds-other-files": (["report", "--study", "known", "--out", "hw"],
                                     "--out 'hw' already exists and is not a ranksweep report folder"),
    "export-to-read-only-folder": (["export", "--study", "known", "--to", "read-only/ranks.json"],
                                   "Cannot write --to 'read-only/ranks.json'"),
    # storage URLs
    "launch-in-memory-storage": (LAUNCH + ["--storage", "sqlite://"],
                                 "'sqlite://' is an in-memory database that keeps nothing once the command ends"),
    "worker-in-memory-storage": (["worker", "--study", "s", "--storage", "sqlite:///:memory:"],
                                 "'sqlite:///:memory:' is an in-memory database that keeps nothing"),
    "report-in-memory-uri-storage": (["report", "--study", "s", "--storage", "sqlite:///file::memory:?uri=true"],
                                     "is an in-memory database that keeps nothing once the command ends"),
    "query-string-password-masked": (["status", "--study", "s", "--storage",
                                      "postgresql://127.0.0.1:{port}/db?user=ranksweep&password=s3cret"],
                                     "postgresql+psycopg2://127.0.0.1"),
    "bare-postgresql-url-uses-psycopg2": (["status", "--study", "s", "--storage",
                                           "postgresql://ranksweep@127.0.0.1:{port}/db"], "Connection refused"),
    "storage-password-masked": (["report", "--study", "s", "--out", "new-report", "--storage",
                                 "postgresql://ranksweep:s3cret@127.0.0.1:{port}/db"],
                                "postgresql+psycopg2://ranksweep:***@127.0.0.1"),
    # a plain Optuna study that happens to hold a `config` attr: every command gives the one foreign-study sentence
    "launch-resume-foreign-study": (with_flag(LAUNCH, "--study", "foreign"), FOREIGN),
    "worker-foreign-study": (["worker", "--study", "foreign"], FOREIGN),
    "status-foreign-study": (["status", "--study", "foreign"], FOREIGN),
    "status-json-foreign-study": (["status", "--study", "foreign", "--json"], FOREIGN),
    "report-foreign-study": (["report", "--study", "foreign", "--out", "new-report"], FOREIGN),
    "export-foreign-study": (["export", "--study", "foreign", "--to", "ranks.json"], FOREIGN),
    "export-homework-foreign-study": (["export", "--study", "foreign", "--homework", "hw-ranks"], FOREIGN),
    "dashboard-foreign-study": (["dashboard", "--study", "foreign", "--port", "0"], FOREIGN),
    "dashboard-read-only-foreign-study": (["dashboard", "--study", "foreign", "--port", "0", "--read-only"], FOREIGN),
    # study names that cannot name a report folder
    "launch-study-dots": (with_flag(LAUNCH, "--study", ".."), "--study .. is not a usable study name"),
    "launch-study-empty": (with_flag(LAUNCH, "--study", ""), "--study '' is not a usable study name (it is empty)"),
    "launch-study-too-long": (with_flag(LAUNCH, "--study", "x" * 300), "(it is longer than 200 bytes)"),
    "report-study-dots": (["report", "--study", ".."], "Study .. is not a usable study name"),
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
    (root / "hw-ranks" / "homework").mkdir(parents=True)
    (root / "hw-ranks" / "homework" / "sft.py").write_text("DEFAULT_LORA_RANK = 8\n")
    (root / "hw-ranks" / "homework" / "rft.py").write_text("RFT_LORA_RANK = 16\n")
    (root / "huge-number.json").write_text('[["How many gram are there per 6 kg?", ' + "9" * 5000 + "]]")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "text.gguf").write_text("not a model, just text\n")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (root / "read-only").mkdir(mode=0o555)
    (root / "deep-adapter").mkdir()
    (root / "deep-adapter" / "adapter_config.json").write_text("{}")
    (root / "deep-adapter" / "ranksweep.json").write_text("[" * 100_000 + "]" * 100_000)
    four_thousand = "7" * 4000
    (root / "4000-digits.json").write_text(f'[["How many gram are there per 1 kg?", {four_thousand}]]')
    (root / "4000-digits-rft.json").write_text(
        f'[["How many gram are there per 1 kg?", {four_thousand}, "1 kg is 1000 g. <answer>1000</answer>"]]')
    write_single_trial_study(f"sqlite:///{root}/studies.db", "known")
    import optuna

    foreign = optuna.create_study(study_name="foreign", storage=f"sqlite:///{root}/studies.db")
    foreign.set_user_attr("config", {"lr": 0.1})
    return root


# These two reach the model loader (which then refuses the file): the integration floor's. Every other case is
# refused before any model exists.
LOADER_CASES = ("train-text-as-gguf", "grade-text-as-gguf")


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in LOADER_CASES else pytest.mark.fast) for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(ranksweep, workdir, case):
    args, mentioned = CASES[case]
    args = [a.format(port=closed_port()) for a in args]
    before = fingerprint(workdir)
    result = ranksweep(*args, cwd=workdir)  # an uncaught exception (a traceback) fails the test here
    out, err = result.stdout, result.stderr
    assert result.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ranksweep: error: "), err
    assert mentioned in lines[0], lines[0]
    assert "s3cret" not in out + err
    assert fingerprint(workdir) == before


def test_one_case_as_a_user_runs_it(cli, workdir):
    """The same contract through a real `python -m sweep` process: stderr is the one line, nothing else."""
    result = cli(*CASES["launch-epochs-inf"][0], cwd=workdir)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("ranksweep: error: --epochs 'inf' is not valid") and result.stderr.count("\n") == 1
