"""A real study on the tiny model: budget respected, adapters trained once, sizes exact, resume works."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from small_data import write_small_data
from sweep.bundle import submission_bytes
from trainers.data import write_json_atomic

BUDGET_MB = 0.4  # tiny adapters are 8 KiB per rank in fp32 (zipped ~0.93 of that): any pair with rank 64 is over


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding small homework-format data, the storage and the artifact cache."""
    root = tmp_path_factory.mktemp("study")
    return write_small_data(root)


def launch_args(root: Path, study: str, trials: int) -> list[str]:
    return [
        "launch", "--study", study, "--storage", f"sqlite:///{root}/studies.db", "--base-model", "tiny",
        "--device", "cpu", "--preset", "quick", "--sft-ranks", "4,16,64", "--rft-ranks", "4,16,64",
        "--budget-mb", str(BUDGET_MB), "--trials", str(trials), "--train-data", root / "train.json",
        "--valid-data", root / "valid.json", "--rft-data", root / "rft.json", "--max-examples", "16",
        "--questions", "4", "--artifacts", root / "artifacts", "--no-progress",
    ]


def load(root: Path, study: str):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{root}/studies.db")


def completed(study):
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_study_respects_budget_reuses_adapters_and_predicts_sizes(cli, workdir):
    result = cli(*launch_args(workdir, "s1", trials=4))
    assert result.returncode == 0, result.stderr
    study = load(workdir, "s1")
    done = completed(study)
    assert len({(t.params["sft_rank"], t.params["rft_rank"]) for t in done}) == 4
    budget = int(BUDGET_MB * 2**20)
    for t in done:
        a = t.user_attrs
        assert 64 not in (a["sft_rank"], a["rft_rank"])  # never trained an over-budget pair
        assert a["size_bytes"] <= a["size_bytes_predicted"] <= budget
        assert a["sft_raw_bytes"] == a["sft_raw_bytes_predicted"]  # exact to the byte
        assert a["rft_raw_bytes"] == a["rft_raw_bytes_predicted"]
        assert 0.0 <= a["sft_accuracy"] <= 1.0 and a["sft_questions"] == 4
        assert t.values[1] == a["size_bytes"]
        # The recorded size is the real zip of both adapters (added up from parts measured once per adapter).
        assert a["size_bytes"] == submission_bytes(None, sft_dir=Path(a["sft_dir"]), rft_dir=Path(a["rft_dir"]))
        assert a["sft_zip_bytes"] == submission_bytes(None, sft_dir=Path(a["sft_dir"]))
        assert json.loads((Path(a["rft_dir"]) / "manifest.json").read_text())["zip_bytes"] == a["rft_zip_bytes"]
        # The budget is the trial's Optuna constraint, which TPE reads (<= 0 is feasible).
        assert t.constraints == {"size": float(a["size_bytes"] - budget)}
        assert {"host", "pid"} <= set(a)
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert t.user_attrs["skipped"] in ("over-budget", "duplicate")
    # Each distinct adapter was trained once: 4 pairs over ranks {4, 16} need at most 2 SFT + 2 RFT trainings.
    trained = [(k, t.user_attrs[f"{k}_key"]) for t in done for k in ("sft", "rft") if not t.user_attrs[f"{k}_cache_hit"]]
    assert len(trained) == len(set(trained)) <= 4
    adapters = list((workdir / "artifacts" / "adapters").iterdir())
    assert len(adapters) == len({key for t in done for key in (t.user_attrs["sft_key"], t.user_attrs["rft_key"])})

    status = cli("status", "--study", "s1", "--storage", f"sqlite:///{workdir}/studies.db", "--json")
    doc = json.loads(status.stdout)
    assert doc["trainings"]["sft"] + doc["trainings"]["rft"] == len(trained)
    assert sum(t["state"] == "COMPLETE" for t in doc["trials"]) == 4


def test_stops_when_every_feasible_pair_was_tried(cli, workdir):
    result = cli(*launch_args(workdir, "s1", trials=9))
    assert result.returncode == 0, result.stderr
    assert "every feasible pair has been tried" in result.stdout
    assert len(completed(load(workdir, "s1"))) == 4  # only {4,16} x {4,16} fits


def test_resume_after_interruption_retries_the_pair(cli, workdir):
    assert cli(*launch_args(workdir, "s2", trials=2)).returncode == 0
    study = load(workdir, "s2")
    # Simulate a crash in the middle of a trial: a RUNNING trial left behind by a process that is gone.
    trial = study.ask({k: optuna.distributions.CategoricalDistribution(v) for k, v in {
        "sft_rank": [4, 16, 64], "rft_rank": [4, 16, 64], "alpha_ratio": [4.0], "lr": [1e-3],
        "epochs": [1.0], "adapter_dtype": ["fp32"]}.items()})
    import socket

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", 2**22 + 12345)  # no such process
    interrupted = trial.number
    result = cli(*launch_args(workdir, "s2", trials=3))
    assert result.returncode == 0, result.stderr
    study = load(workdir, "s2")
    states = {t.number: t.state for t in study.get_trials()}
    assert states[interrupted] == optuna.trial.TrialState.FAIL
    assert "interrupted" in study.trials[interrupted].user_attrs["error"]
    assert len(completed(study)) == 3


def test_resume_with_other_data_is_refused(cli, workdir, tmp_path):
    other = tmp_path / "train.json"
    write_json_atomic(other, [["How many gram are there per 2 kg?", 2000.0]])
    args = launch_args(workdir, "s1", trials=4)
    args[args.index("--train-data") + 1] = other
    result = cli(*args)
    assert result.returncode == 2
    assert "different train_sha256" in result.stderr and "Traceback" not in result.stderr
