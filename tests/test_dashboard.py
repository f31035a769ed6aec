"""`ranksweep dashboard` against a real study on `tiny`: its JSON API serves the trials, their constraints, the
objective names, the recommended pair as the note and the report's figures; it stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from cli_runner import ROOT, run_cli
from small_data import write_small_data
from study_fixtures import write_sweep_study

pytest.importorskip("optuna_dashboard")
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names

BUDGET_MB = 0.2  # tiny adapters are 8 KiB per rank in fp32: rank 16 with rank 16 (~0.25 MiB) is over


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> tuple[Path, str]:
    """A real study on `tiny`: ranks 4 and 16 for both adapters, three pairs fit the budget and one does not."""
    root = write_small_data(tmp_path_factory.mktemp("dashboard"))
    url = f"sqlite:///{root}/studies.db"
    result = run_cli("launch", "--study", "t", "--storage", url, "--base-model", "tiny", "--device", "cpu",
                     "--preset", "quick", "--sft-ranks", "4,16", "--rft-ranks", "4,16", "--budget-mb", BUDGET_MB,
                     "--trials", "4", "--train-data", root / "train.json", "--valid-data", root / "valid.json",
                     "--rft-data", root / "rft.json", "--max-examples", "16", "--questions", "4",
                     "--artifacts", root / "artifacts", "--no-progress", cwd=root)
    assert result.returncode == 0, result.stderr
    return root, url


@contextmanager
def dashboard(url: str, study: str, cwd: Path, *extra: str):
    """Start `ranksweep dashboard --port 0` and yield (base URL, study URL, stdout lines so far, the process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sweep", "dashboard", "--study", study, "--storage", url,
                             "--port", "0", *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell running pytest in the background ignores SIGINT for its children; Ctrl-C is tested
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:  # the URL line comes once the server listens; a reader thread keeps the pipe drained
        for line in proc.stdout:
            lines.append(line)
            if "http://" in line:
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        found.wait(timeout=120)  # a safety net for a hung start, not a speed check
        match = re.search(r"(http://127\.0\.0\.1:\d+)(/dashboard/studies/\d+)", "".join(lines))
        assert match, f"no URL printed: {''.join(lines)}{proc.stderr.read() if proc.poll() is not None else ''}"
        yield match.group(1), match.group(1) + match.group(2), lines, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)


def study_system_attrs(url: str, name: str) -> dict:
    """Where names, note versions and artifact records live (Study.system_attrs is gone in optuna 5)."""
    storage = optuna.storages.RDBStorage(url)
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def study_detail(base: str, study_url: str) -> dict:
    study_id = int(study_url.rsplit("/", 1)[1])
    return get_json(f"{base}/api/studies/{study_id}")


def test_dashboard_serves_trials_constraints_names_note_and_figures(tiny_study):
    from sweep.frontier import recommend

    root, url = tiny_study
    study = optuna.load_study(study_name="t", storage=url)
    trials = study.get_trials()
    with dashboard(url, "t", root) as (base, study_url, lines, proc):
        names = [s["study_name"] for s in get_json(f"{base}/api/studies")["study_summaries"]]
        detail = study_detail(base, study_url)
        artifacts = {a["filename"]: a["artifact_id"] for a in detail["artifacts"]}
        study_id = study_url.rsplit("/", 1)[1]
        pareto = b""
        if "pareto-3-trials.png" in artifacts:
            pareto = urllib.request.urlopen(f"{base}/artifacts/{study_id}/{artifacts['pareto-3-trials.png']}").read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read()

    assert names == ["t"]
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and any(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    for trial in complete:
        assert served[trial.number]["values"] == pytest.approx(trial.values)
        # optuna-dashboard 0.21 draws feasibility from the list-valued system attr `constraints`: size - budget.
        budget = trial.user_attrs["budget_bytes"]
        assert served[trial.number]["constraints"] == pytest.approx([trial.user_attrs["size_bytes"] - budget])
        assert all(c <= 0 for c in served[trial.number]["constraints"]) == trial.user_attrs["feasible"]
    over = [t for t in trials if t.user_attrs.get("skipped") == "over-budget"]
    assert over and all(served[t.number]["constraints"][0] > 0 for t in over)  # 16/16, pruned untrained
    assert detail["objective_names"] == ["points", "zipped bytes"]
    rec = recommend(url, "t")
    assert f"**SFT rank {rec.sft_rank}, RFT rank {rec.rft_rank}**" in detail["note"]["body"]
    assert sorted(artifacts) == ["pareto-3-trials.png", "ranks-3-trials.png"]
    assert pareto.startswith(b"\x89PNG") and (root / "runs" / "t" / "dashboard-artifacts").is_dir()
    assert "Dashboard stopped." in stderr and "Traceback" not in stderr


def test_a_second_start_on_an_unchanged_study_writes_nothing(tiny_study):
    root, url = tiny_study
    with dashboard(url, "t", root):
        pass  # the first start (or the test before) named, noted and uploaded
    before = study_system_attrs(url, "t")
    with dashboard(url, "t", root) as (_, _, lines, _):
        assert "up to date" in "".join(lines)
    assert study_system_attrs(url, "t") == before


def test_read_only_writes_nothing_and_keeps_names_a_study_already_has(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    write_sweep_study(url)  # written like a study of an older launcher: no names, no note
    optuna.load_study(study_name="sweep", storage=url).set_metric_names(["score", "bytes"])
    before = study_system_attrs(url, "sweep")
    with dashboard(url, "sweep", tmp_path, "--read-only") as (base, study_url, _, _):
        detail = study_detail(base, study_url)
    assert detail["objective_names"] == ["score", "bytes"] and detail["note"]["body"] == ""
    assert study_system_attrs(url, "sweep") == before
    assert not (tmp_path / "runs").exists()
    with dashboard(url, "sweep", tmp_path) as (base, study_url, _, _):
        detail = study_detail(base, study_url)
    assert detail["objective_names"] == ["score", "bytes"]  # the study's own names win
    assert "**SFT rank 8, RFT rank 16**" in detail["note"]["body"]


@pytest.mark.fast
def test_user_text_below_the_note_survives_and_a_foreign_note_is_kept():
    from reports.dashboard import NOTE_END, merged_note

    ours = "## ranksweep: recommended pair\n\nnew\n\n" + NOTE_END
    assert merged_note(ours, "## ranksweep: old\n" + NOTE_END + "\nmy remarks") == ours + "\nmy remarks"
    assert merged_note(ours, "notes typed before ranksweep") == ours + "\n\nnotes typed before ranksweep"
    assert merged_note(ours, "") == ours


@pytest.mark.parametrize("case", ["no storage file", "no such study"])
def test_missing_storage_or_study_is_one_sentence(tmp_path, case):
    url = f"sqlite:///{tmp_path}/studies.db"
    if case == "no such study":
        write_sweep_study(url)
    result = run_cli("dashboard", "--study", "nope", "--storage", url, "--port", "0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    expected = "No study storage at" if case == "no storage file" else "No study named 'nope'"
    assert expected in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if case == "no storage file" else ["studies.db"])


def http(method: str, url: str, body: dict | None = None) -> int:
    """The status of one real HTTP request (an error status is returned, not raised)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_read_only_refuses_every_request_that_could_change_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/studies.db"
    write_sweep_study(url)
    study = optuna.load_study(study_name="sweep", storage=url)
    storage = optuna.storages.RDBStorage(url)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("sweep"), 0)
    attrs, user_attrs = study_system_attrs(url, "sweep"), [t.user_attrs for t in study.trials]
    with dashboard(url, "sweep", tmp_path, "--read-only") as (base, study_url, _, _):
        sid = int(study_url.rsplit("/", 1)[1])
        writes = [
            ("DELETE", f"/api/studies/{sid}", None),
            ("PUT", f"/api/studies/{sid}/note", {"version": 1, "body": "changed"}),
            ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
            ("POST", f"/api/studies/{sid}/rename", {"study_name": "renamed"}),
            ("POST", f"/api/trials/{trial_id}/user-attrs", {"user_attrs": {"changed": 1}}),
            ("PUT", f"/api/studies/{sid}/{trial_id}/note", {"version": 1, "body": "changed"}),
            ("POST", f"/api/trials/{trial_id}/tell", {"state": "Fail"}),
        ]
        assert [http(method, base + path, body) for method, path, body in writes] == [405] * len(writes)
        assert http("GET", f"{base}/api/studies/{sid}") == 200  # reading still works
    assert optuna.get_all_study_names(url) == ["sweep"]
    assert study_system_attrs(url, "sweep") == attrs
    assert [t.user_attrs for t in optuna.load_study(study_name="sweep", storage=url).trials] == user_attrs


def test_a_port_in_use_fails_before_anything_is_written(tmp_path):
    import socket

    url = f"sqlite:///{tmp_path}/studies.db"
    write_sweep_study(url)
    attrs = study_system_attrs(url, "sweep")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--study", "sweep", "--storage", url, "--port", port, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and f"Port {port}" in result.stderr
    assert study_system_attrs(url, "sweep") == attrs  # no names, no note, no artifact records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.db"]  # no figures folder
