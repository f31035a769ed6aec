"""What survives a crash: a killed or interrupted launch resumes without losing or repeating work, workers
share one study (SQLite on one machine, PostgreSQL across machines) without training an adapter twice,
and a trial that fails does not end the study."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cli_runner import ROOT
from postgres import postgres_url, unique_name
from small_data import write_small_data
from sweep.cache import HASHED_FILES, MANIFEST, AdapterSpec
from sweep.settings import file_hash
from sweep.space import PRESETS
from sweep.storage import open_storage
from trainers.data import file_sha256
from trainers.training import TrainConfig

BUDGET_MB = 0.4  # every pair of ranks {4, 16} fits (tiny adapters are ~8 KiB per rank)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability-data")
    return write_small_data(root)


def launch_args(data: Path, work: Path, study: str, trials: int, *, storage: str | None = None,
                sft_ranks: str = "4,16", rft_ranks: str = "4,16") -> list[str]:
    return [
        "launch", "--study", study, "--storage", storage or f"sqlite:///{work}/studies.db", "--base-model", "tiny",
        "--device", "cpu", "--preset", "quick", "--sft-ranks", sft_ranks, "--rft-ranks", rft_ranks,
        "--budget-mb", str(BUDGET_MB), "--trials", str(trials), "--train-data", str(data / "train.json"),
        "--valid-data", str(data / "valid.json"), "--rft-data", str(data / "rft.json"), "--max-examples", "16",
        "--questions", "4", "--artifacts", str(work / "artifacts"), "--no-progress",
    ]


# Heartbeat every second, so a killed process's trial is stale (and its pair retried) 4 s later.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RANKSWEEP_HEARTBEAT_SECONDS": "1"}


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    env = env or ENV
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials_now(db: Path, study: str) -> list:
    """The study's trials as Optuna reads them while another process writes the file; none before it exists."""
    if not db.exists():
        return []
    try:
        return optuna.load_study(study_name=study, storage=open_storage(f"sqlite:///{db}")).get_trials(deepcopy=False)
    except KeyError:  # the launch has not created the study yet
        return []


def trial_states(db: Path, study: str) -> dict[int, str]:
    """Trial number -> state name."""
    return {t.number: t.state.name for t in trials_now(db, study)}


def wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 1200):
    """Poll until condition() is truthy; fail if the process exits first (the limit only guards a hang)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the launch exited ({proc.returncode}) before {what}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}")


def pair(t) -> tuple:
    return t.params["sft_rank"], t.params["rft_rank"]


def assert_cache_verifies(artifacts: Path) -> None:
    """Every adapter entry is sealed and its files hash to its manifest; no temp folder is left as an entry."""
    entries = list((artifacts / "adapters").iterdir())
    assert entries
    for folder in entries:
        assert not folder.name.startswith("."), f"leftover temporary folder {folder}"
        manifest = json.loads((folder / MANIFEST).read_text())
        for name in HASHED_FILES:
            assert file_sha256(folder / name) == manifest[name], folder


def assert_all_accounted(study, trials: list) -> None:
    assert len({t.number for t in trials}) == len(trials)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # No pair was completed twice.
    assert len({pair(t) for t in complete}) == len(complete), [pair(t) for t in complete]
    # An adapter is trained by exactly one trial; every other trial that needed it found it in the cache.
    trained = Counter(t.user_attrs[f"{k}_key"] for t in complete for k in ("sft", "rft")
                      if not t.user_attrs[f"{k}_cache_hit"])
    used = {t.user_attrs[f"{k}_key"] for t in complete for k in ("sft", "rft")}
    assert set(trained) == used and max(trained.values()) == 1, trained


def owned_running(db: Path, study: str) -> list[int]:
    """Numbers of RUNNING trials that have recorded their owner (the last owner attr is the sampler seed)."""
    return [t.number for t in trials_now(db, study) if t.state == TrialState.RUNNING and "sampler_seed" in t.user_attrs]


def test_sigkill_mid_trial_then_an_immediate_rerun_finishes_that_pair(data, tmp_path):
    """On one host a RUNNING trial's owner is known: the rerun right after kill -9 fails the killed trial and
    retries its pair at once, although its heartbeat (10 minutes here) is far from stale."""
    args = launch_args(data, tmp_path, "crash", trials=1)
    db = tmp_path / "studies.db"
    env = {**ENV, "RANKSWEEP_HEARTBEAT_SECONDS": "600"}
    proc = start(*args, env=env)
    [killed] = wait_for(lambda: owned_running(db, "crash"), proc, "a trial recorded its owner")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert trial_states(db, "crash") == {killed: "RUNNING"}

    result = subprocess.run([sys.executable, "-m", "sweep", *args], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert study.trials[killed].state == TrialState.FAIL
    # Its pair was retried by the trial enqueued for it, and is the study's one complete pair.
    [retry] = [t for t in trials if t.state == TrialState.COMPLETE]
    assert retry.system_attrs.get("failed_trial") == killed and pair(retry) == pair(study.trials[killed])
    assert retry.user_attrs["pid"] != study.trials[killed].user_attrs["pid"]
    assert_all_accounted(study, trials)
    assert_cache_verifies(tmp_path / "artifacts")
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_only_this_hosts_trials_whose_process_is_gone_are_failed_at_once(tmp_path):
    """A pid now held by a process that started later counts as gone; a live owner and another host's are kept."""
    from optuna.distributions import CategoricalDistribution

    from sweep.storage import open_storage
    from sweep.study import Opened, fail_orphaned_trials
    from trainers.processes import host, start_time

    storage = open_storage(f"sqlite:///{tmp_path}/studies.db", must_exist=False, heartbeat=True)
    study = optuna.create_study(study_name="owners", storage=storage)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    me, started = os.getpid(), start_time(os.getpid())
    owners = {
        "reused pid": {"host": host(), "pid": me, "pid_started": started - 1},
        "exited": {"host": host(), "pid": int(finished.stdout)},
        "alive": {"host": host(), "pid": me, "pid_started": started},
        "other host": {"host": "elsewhere", "pid": int(finished.stdout)},
        "not yet recorded": {},
    }
    numbers = {}
    for case, attrs in owners.items():
        trial = study.ask({"sft_rank": CategoricalDistribution([4, 16])})
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        numbers[case] = trial.number

    failed = fail_orphaned_trials(Opened(study, storage, seed=0))
    assert sorted(failed) == sorted([numbers["reused pid"], numbers["exited"]])
    states = {case: study.trials[n].state for case, n in numbers.items()}
    assert states == {"reused pid": TrialState.FAIL, "exited": TrialState.FAIL, "alive": TrialState.RUNNING,
                      "other host": TrialState.RUNNING, "not yet recorded": TrialState.RUNNING}
    # Each pair is enqueued once more, without the dead owner's attrs (which would make the retry look orphaned).
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == sorted(failed)
    assert all(t.user_attrs == {} and t.params == study.trials[t.system_attrs["failed_trial"]].params
               for t in waiting)
    assert fail_orphaned_trials(Opened(study, storage, seed=0)) == []  # a second look finds nothing new


def test_sigint_marks_the_trial_failed_and_says_how_to_resume(data, tmp_path):
    db = tmp_path / "studies.db"
    proc = start(*launch_args(data, tmp_path, "ctrlc", trials=2))
    wait_for(lambda: "RUNNING" in trial_states(db, "ctrlc").values(), proc, "a trial started")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Resume with: ranksweep launch --study ctrlc" in stderr
    states = trial_states(db, "ctrlc")
    assert "RUNNING" not in states.values() and "FAIL" in states.values()
    study = optuna.load_study(study_name="ctrlc", storage=f"sqlite:///{db}")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["error"] for t in failed] == ["interrupted: stopped by the user (Ctrl-C)"]


def test_corrupt_cached_adapter_is_retrained_with_a_warning(ranksweep, data, tmp_path):
    args = launch_args(data, tmp_path, "first", trials=1, sft_ranks="4", rft_ranks="4")
    assert ranksweep(*args).returncode == 0
    done = optuna.load_study(study_name="first", storage=f"sqlite:///{tmp_path}/studies.db").best_trials[0]
    weights = Path(done.user_attrs["sft_dir"]) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as a full disk or a crash could leave it

    args[args.index("first")] = "second"
    result = ranksweep(*args)
    assert result.returncode == 0, result.stderr
    assert "warning: cached adapter" in result.stderr and "retraining it" in result.stderr
    study = optuna.load_study(study_name="second", storage=f"sqlite:///{tmp_path}/studies.db")
    [trial] = study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.user_attrs["sft_cache_hit"] is False and trial.user_attrs["rft_cache_hit"] is True
    assert_cache_verifies(tmp_path / "artifacts")


def test_a_failing_trial_does_not_end_the_study(ranksweep, data, tmp_path):
    # The SFT rank-16 adapter's lock path is taken by a folder, so that adapter cannot be trained: every
    # trial that needs it fails with an OSError, the others complete.
    quick = PRESETS["quick"]
    config = TrainConfig(kind="sft", rank=16, alpha_ratio=4.0, lr=quick.space.lrs[0], epochs=quick.space.epochs[0],
                         adapter_dtype="fp32",
                         batch_size=quick.effort.batch_size, max_examples=16, seed=0)
    spec = AdapterSpec(config=config, base_model="tiny", data_sha256=file_hash(data / "train.json"))
    (tmp_path / "artifacts" / "locks" / f"{spec.key}.lock").mkdir(parents=True)
    result = ranksweep(*launch_args(data, tmp_path, "failing", trials=2, rft_ranks="4"))
    assert result.returncode == 0, result.stderr
    assert "the study goes on" in result.stderr and "every feasible pair has been tried" in result.stdout
    study = optuna.load_study(study_name="failing", storage=f"sqlite:///{tmp_path}/studies.db")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and all(pair(t) == (16, 4) for t in failed)
    assert all(t.user_attrs["error"].startswith("IsADirectoryError") for t in failed)
    assert [pair(t) for t in study.get_trials(states=(TrialState.COMPLETE,))] == [(4, 4)]
    # A worker asked for fewer pairs than the study's target says so, and leaves the target alone.
    url = f"sqlite:///{tmp_path}/studies.db"
    result = ranksweep("worker", "--study", "failing", "--storage", url, "--device", "cpu", "--trials", "1",
                       "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "asks for 2 complete pairs; --trials 1 leaves that target as it is" in result.stdout
    assert optuna.load_study(study_name="failing", storage=url).user_attrs["config"]["trials"] == 2

    # A study whose every trial failed is no success: exit 1 and one sentence saying where the errors are.
    result = ranksweep(*launch_args(data, tmp_path, "all-failing", trials=1, sft_ranks="16", rft_ranks="4"))
    assert result.returncode == 1 and result.stdout == ""
    assert "ranksweep: error: every trial of study 'all-failing' failed and no pair is complete; see why with: " \
        "ranksweep status --study all-failing" in result.stderr


def run_two_workers(data: Path, work: Path, storage: str, study: str, trials: int) -> list:
    """Create the study with one complete trial, then let two workers raise the target and run it together."""
    first = subprocess.run([sys.executable, "-m", "sweep", *launch_args(data, work, study, 1, storage=storage)],
                           cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert first.returncode == 0, first.stderr
    worker = ["worker", "--study", study, "--storage", storage, "--device", "cpu", "--trials", str(trials),
              "--no-progress"]
    procs = [start(*worker), start(*worker)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
        assert "database is locked" not in stderr
    loaded = optuna.load_study(study_name=study, storage=storage)
    trials_ = loaded.get_trials()
    assert_all_accounted(loaded, trials_)
    complete = [t for t in trials_ if t.state == TrialState.COMPLETE]
    # The target reached exactly, with each pair once (assert_all_accounted: no adapter trained twice, no pair
    # twice), and the two workers drew with seeds of their own.
    assert len(complete) == len({pair(t) for t in complete}) == trials  # the study's total, not each worker's
    seeds = {t.user_attrs["sampler_seed"] for t in trials_ if t.number > 0 and "sampler_seed" in t.user_attrs}
    assert len(seeds) == 2, seeds
    # The artifact folder holds exactly the adapters the trials trained, each once.
    used = {t.user_attrs[f"{k}_key"] for t in complete for k in ("sft", "rft")}
    assert {p.name.rsplit("-", 1)[1] for p in (work / "artifacts" / "adapters").iterdir()} == used
    assert_cache_verifies(work / "artifacts")
    return trials_


def test_two_workers_share_a_sqlite_study(data, tmp_path):
    run_two_workers(data, tmp_path, f"sqlite:///{tmp_path}/studies.db", "pair-sqlite", trials=4)
    with sqlite3.connect(tmp_path / "studies.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_workers_share_a_postgresql_study(data, tmp_path):
    url = postgres_url()
    run_two_workers(data, tmp_path, url, unique_name("pair-pg"), trials=4)
