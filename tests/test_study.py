"""A real study on the tiny model: budget respected, adapters trained once, sizes exact, resume works, and a
resume or a worker that would change or misuse a study is refused before anything is written.

The CLI runs in-process (`ranksweep` fixture): the commands' behaviour without a new interpreter per call."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from small_data import write_small_data
from waiting import wait_until_failed_as_stale
from sweep.bundle import submission_bytes
from sweep.space import PRESETS
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


@pytest.fixture(scope="module")
def s1(ranksweep, workdir) -> Path:
    """The workdir once study `s1` ran its 4 trials (built on first use, shared by this module's tests that
    resume or refuse it: every feasible pair is tried by then, so no later run adds a completed trial)."""
    result = ranksweep(*launch_args(workdir, "s1", trials=4))
    assert result.returncode == 0, result.stderr
    return workdir


def load(root: Path, study: str):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{root}/studies.db")


def completed(study):
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_study_respects_budget_reuses_adapters_and_predicts_sizes(ranksweep, s1):
    workdir = s1
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

    status = ranksweep("status", "--study", "s1", "--storage", f"sqlite:///{workdir}/studies.db", "--json")
    doc = json.loads(status.stdout)
    assert doc["trainings"]["sft"] + doc["trainings"]["rft"] == len(trained)
    assert sum(t["state"] == "COMPLETE" for t in doc["trials"]) == 4


def test_stops_when_every_feasible_pair_was_tried(ranksweep, s1):
    workdir = s1
    result = ranksweep(*launch_args(workdir, "s1", trials=9))
    assert result.returncode == 0, result.stderr
    assert "every feasible pair has been tried" in result.stdout
    assert len(completed(load(workdir, "s1"))) == 4  # only {4,16} x {4,16} fits


def test_resume_after_interruption_retries_the_pair(ranksweep, workdir, monkeypatch):
    """A trial whose process died (its heartbeat stopped) is failed by Optuna's stale check, as the next run's would
    be, and the next run completes *its pair*."""
    from sweep.storage import open_storage

    assert ranksweep(*launch_args(workdir, "s2", trials=2)).returncode == 0
    monkeypatch.setenv("RANKSWEEP_HEARTBEAT_SECONDS", "1")  # stale after 4 s
    storage = open_storage(f"sqlite:///{workdir}/studies.db", heartbeat=True)
    study = optuna.load_study(study_name="s2", storage=storage)
    done = {(t.params["sft_rank"], t.params["rft_rank"]) for t in completed(study)}
    sft, rft = next((s, r) for s in (4, 16) for r in (4, 16) if (s, r) not in done)
    # A trial left RUNNING by a process that stopped beating mid-training.
    # The study's own search space (the preset's lr, epochs, ...), with this pair enqueued.
    space = study.trials[0].distributions
    study.enqueue_trial({**{k: d.choices[0] for k, d in space.items()}, "sft_rank": sft, "rft_rank": rft})
    trial = study.ask(space)
    study_id = storage.get_study_id_from_name("s2")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    interrupted = trial.number
    wait_until_failed_as_stale(study, interrupted)  # its beat stops here: Optuna fails it, re-enqueues its pair
    # The rerun beats at the default pace: at 1 s, a loaded machine can stall its own beat past the grace period
    # and fail the retry as stale too.
    monkeypatch.delenv("RANKSWEEP_HEARTBEAT_SECONDS")
    result = ranksweep(*launch_args(workdir, "s2", trials=3))
    assert result.returncode == 0, result.stderr
    study = load(workdir, "s2")
    assert study.trials[interrupted].state == optuna.trial.TrialState.FAIL
    retried = [t for t in completed(study) if t.system_attrs.get("failed_trial") == interrupted]
    assert [(t.params["sft_rank"], t.params["rft_rank"]) for t in retried] == [(sft, rft)]
    assert len(completed(study)) == 3
    status = json.loads(ranksweep("status", "--study", "s2", "--storage", f"sqlite:///{workdir}/studies.db",
                            "--json").stdout)
    assert status["trials"][interrupted]["error"].startswith("interrupted")


def test_resume_with_other_data_is_refused(ranksweep, s1, tmp_path):
    workdir = s1
    other = tmp_path / "train.json"
    write_json_atomic(other, [["How many gram are there per 2 kg?", 2000.0]])
    args = launch_args(workdir, "s1", trials=4)
    args[args.index("--train-data") + 1] = other
    result = ranksweep(*args)
    assert result.returncode == 2
    assert "different train_sha256" in result.stderr and "Traceback" not in result.stderr


def snapshot(root: Path, study: str) -> tuple:
    """What a refused command must leave unchanged: the study's attrs and every trial's number, state, attrs."""
    s = load(root, study)
    return s.user_attrs, [(t.number, t.state, t.params, t.user_attrs) for t in s.get_trials()]


@pytest.mark.parametrize("flag, value, named", [
    ("--sft-ranks", "4,16", "sft_ranks 4,16,64"),
    ("--preset", "full", f"epochs {PRESETS['quick'].space.epochs[0]}"),  # the study's own value is named
    ("--objective", "sft-accuracy", None),  # same direction: allowed, checked below
    # One frontier must not mix adapters trained on 16 and 8 rows or graded on 4 and 6 questions.
    ("--max-examples", "8", "--max-examples 16, now 8"),
    ("--questions", "6", "--questions 4, now 6"),
    ("--strategy", "shrink", "--strategy 'independent', now 'shrink'"),
])
def test_resume_with_another_search_space_or_effort_is_refused_before_writing(ranksweep, s1, flag, value, named):
    workdir = s1
    args = launch_args(workdir, "s1", trials=4)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    before = snapshot(workdir, "s1")
    result = ranksweep(*args)
    if named is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "another --study name" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(workdir, "s1") == before  # the config was not rewritten, no trial was added
    # The study still runs: a worker reads the unchanged config.
    assert ranksweep("worker", "--study", "s1", "--storage", f"sqlite:///{workdir}/studies.db",
                     "--device", "cpu", "--no-progress").returncode == 0


@pytest.mark.parametrize("flags, named", [
    (["--trials", "50", "--artifacts", "{root}/train.json/art"], "--artifacts"),
    (["--trials", "50", "--device", "cuda"], "cuda"),
])
def test_worker_checks_every_flag_before_touching_the_study(ranksweep, s1, flags, named):
    workdir = s1
    import torch

    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = snapshot(workdir, "s1")
    result = ranksweep("worker", "--study", "s1", "--storage", f"sqlite:///{workdir}/studies.db", "--no-progress",
                       *[f.format(root=workdir) for f in flags])
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr
    assert snapshot(workdir, "s1") == before  # target not raised, no PRUNED or FAIL trial added


@pytest.mark.fast
@pytest.mark.parametrize("command", ["launch", "worker"])
def test_a_study_ranksweep_did_not_make_is_refused(ranksweep, workdir, command):
    url = f"sqlite:///{workdir}/studies.db"
    if "foreign" not in optuna.get_all_study_names(url):
        foreign = optuna.create_study(study_name="foreign", storage=url)
        foreign.set_user_attr("owner", "someone else")
        foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = snapshot(workdir, "foreign")
    args = launch_args(workdir, "foreign", trials=2) if command == "launch" else [
        "worker", "--study", "foreign", "--storage", url, "--device", "cpu", "--no-progress"]
    result = ranksweep(*args)
    assert result.returncode == 2
    assert result.stderr == (f"ranksweep: error: Study 'foreign' in {url} was not made by ranksweep (it carries no "
                             "'ranksweep' marker); ranksweep reads and runs only its own studies: give the --study "
                             "name of a study `ranksweep launch` made, or a new name to launch one.\n")
    assert snapshot(workdir, "foreign") == before


def test_a_study_made_before_the_marker_is_still_read(ranksweep, s1):
    """A study whose config holds every key the first ranksweep wrote, and no marker (version 0), is read; a
    plain Optuna study with a `config` attr is not (test_bad_input's foreign cases)."""
    from sweep.storage import MARKER, marker_version

    workdir = s1
    url = f"sqlite:///{workdir}/studies.db"
    config = load(workdir, "s1").user_attrs["config"]
    if "old" not in optuna.get_all_study_names(url):
        old = optuna.create_study(study_name="old", storage=url, directions=["maximize", "minimize"])
        old.set_user_attr("config", config)
    assert MARKER not in load(workdir, "old").user_attrs and marker_version(load(workdir, "old").user_attrs) == 0
    assert marker_version({"config": {"lr": 0.1}}) is None
    result = ranksweep("status", "--study", "old", "--storage", url)
    assert result.returncode == 0, result.stderr


@pytest.mark.fast
def test_the_loop_uses_no_private_optuna_parts():
    """The study loop, reports and trainers stay on Optuna's public API (docs/design.md, issue 12)."""
    import re

    root = Path(__file__).resolve().parent.parent
    private = re.compile(r"\._storage\b|_thread_local|optuna\.storages\._|_create_scoped_session|_sample_relative"
                         r"|\._trial_id\b|\._study_id\b")
    hits = [f"{path.relative_to(root)}:{n}: {line.strip()}"
            for folder in ("sweep", "reports", "trainers") for path in sorted((root / folder).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert hits == []


def test_a_first_launch_that_failed_sampling_rft_data_accepts_the_corrected_rerun(ranksweep, workdir):
    """The tiny model answers nothing right, so rejection sampling keeps no chain: the first launch stops with one
    sentence and leaves a study with a FAIL trial; the rerun that brings its own --rft-data resumes it (nothing
    was graded, so nothing can be mixed) where it used to be refused as a 'different rft_sha256'."""
    args = launch_args(workdir, "sampling", trials=1)
    at = args.index("--rft-data")
    without_rft = args[:at] + args[at + 2:] + ["--rft-questions", "2", "--rft-samples", "1"]
    first = ranksweep(*without_rft)
    assert first.returncode == 2 and "Rejection sampling kept none" in first.stderr, first.stderr
    states = [t.state.name for t in load(workdir, "sampling").get_trials()]
    assert "FAIL" in states and "COMPLETE" not in states  # (an over-budget pair is PRUNED before it)
    rerun = ranksweep(*without_rft, "--rft-data", workdir / "rft.json")
    assert rerun.returncode == 0, rerun.stderr
    assert "Study 'sampling': 1 pair trained and graded." in rerun.stdout  # one pair, not "1 pairs"
    study = load(workdir, "sampling")
    assert len(completed(study)) == 1 and study.user_attrs["config"]["rft_path"] == str(workdir / "rft.json")


def test_launch_help_describes_the_presets_as_they_are(ranksweep):
    """The --preset help is written from the presets' values, so it cannot describe an older quick preset."""
    import re

    text = " ".join(ranksweep("launch", "--help").stdout.split())
    quick = PRESETS["quick"]
    assert f"quick: CPU-sized ({quick.effort.max_examples} training rows, {quick.space.epochs[0]:g} epochs" in text
    assert f"{quick.effort.questions} questions" in text and f"{quick.trials} trials" in text
    assert "SFT ranks " + "/".join(map(str, quick.space.sft_ranks)) in text
    assert not re.search(r"160 training rows|ranks 2/8/32", text)
