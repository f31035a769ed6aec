"""A real study on the tiny model: budget respected, adapters trained once, sizes exact, resume works."""

from __future__ import annotations

import json
import time
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
        # The budget is the trial's Optuna constraint (<= 0 is feasible), in the form Trial.set_constraint writes
        # and in the list form optuna-dashboard 0.21 reads; TPE reads both.
        over = float(a["size_bytes"] - budget)
        assert t.constraints == {"size": over, "0": over} and t.system_attrs["constraints"] == [over]
        assert {"host", "pid", "sampler_seed"} <= set(a)
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert t.user_attrs["skipped"] in ("over-budget", "duplicate")
        if t.user_attrs["skipped"] == "over-budget":  # never trained, still infeasible to the sampler
            assert t.constraints["size"] == t.user_attrs["size_bytes_predicted"] - budget > 0
    assert study.metric_names == ["points", "zipped bytes"]
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


def test_resume_after_interruption_retries_the_pair(cli, workdir, monkeypatch):
    """A trial whose process died (its heartbeat stopped) is failed by the next run, and *its pair* completes."""
    from optuna.distributions import CategoricalDistribution

    from sweep.storage import open_storage

    assert cli(*launch_args(workdir, "s2", trials=2)).returncode == 0
    monkeypatch.setenv("RANKSWEEP_HEARTBEAT_SECONDS", "1")  # stale after 4 s
    storage = open_storage(f"sqlite:///{workdir}/studies.db", heartbeat=True)
    study = optuna.load_study(study_name="s2", storage=storage)
    done = {(t.params["sft_rank"], t.params["rft_rank"]) for t in completed(study)}
    sft, rft = next((s, r) for s in (4, 16) for r in (4, 16) if (s, r) not in done)
    # A trial left RUNNING by a process that stopped beating mid-training.
    study.enqueue_trial({"sft_rank": sft, "rft_rank": rft, "alpha_ratio": 4.0, "lr": 1e-3, "epochs": 1.0,
                         "adapter_dtype": "fp32"})
    trial = study.ask({k: CategoricalDistribution(v) for k, v in {
        "sft_rank": [4, 16, 64], "rft_rank": [4, 16, 64], "alpha_ratio": [4.0], "lr": [1e-3],
        "epochs": [1.0], "adapter_dtype": ["fp32"]}.items()})
    study_id = storage.get_study_id_from_name("s2")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    interrupted = trial.number
    time.sleep(5)
    result = cli(*launch_args(workdir, "s2", trials=3), env={"RANKSWEEP_HEARTBEAT_SECONDS": "1"})
    assert result.returncode == 0, result.stderr
    study = load(workdir, "s2")
    assert study.trials[interrupted].state == optuna.trial.TrialState.FAIL
    retried = [t for t in completed(study) if t.system_attrs.get("failed_trial") == interrupted]
    assert [(t.params["sft_rank"], t.params["rft_rank"]) for t in retried] == [(sft, rft)]
    assert len(completed(study)) == 3
    status = json.loads(cli("status", "--study", "s2", "--storage", f"sqlite:///{workdir}/studies.db",
                            "--json").stdout)
    assert status["trials"][interrupted]["error"].startswith("interrupted")


def test_resume_with_other_data_is_refused(cli, workdir, tmp_path):
    other = tmp_path / "train.json"
    write_json_atomic(other, [["How many gram are there per 2 kg?", 2000.0]])
    args = launch_args(workdir, "s1", trials=4)
    args[args.index("--train-data") + 1] = other
    result = cli(*args)
    assert result.returncode == 2
    assert "different train_sha256" in result.stderr and "Traceback" not in result.stderr
