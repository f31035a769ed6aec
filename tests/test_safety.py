"""Nothing lost, nothing half-done: output paths checked before any work, diverged trainings never saved,
leftovers of killed saves cleaned. Real trainings on `tiny`, real files; commands run in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from sweep.cli import main
from trainers.adapter_files import save_adapter
from trainers.errors import RanksweepError
from trainers.training import TrainConfig, sft_examples, train_adapter
from trainers.unitgen import generate_questions


@pytest.fixture(scope="module")
def examples():
    return sft_examples(generate_questions(2, seed=0)) * 8


def is_adapter_folder(path: Path) -> bool:
    return sorted(p.name for p in path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                      "ranksweep.json", "training_log.csv"]


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_diverging_training_stops_and_saves_nothing(tiny, examples, tmp_path):
    out = tmp_path / "artifacts" / "sft-r2"
    config = TrainConfig(kind="sft", rank=2, lr=1e30, batch_size=4, epochs=1)
    with pytest.raises(RanksweepError, match=r"diverged: its loss was nan at step 2 of 4; nothing was saved"):
        train_adapter(tiny, examples, config, out, progress=False)
    assert not out.parent.exists()  # no adapter, no temp folder, not even the parent
    # The borrowed model is handed back clean: the next training on it is finite.
    ok = train_adapter(tiny, examples, TrainConfig(kind="sft", rank=2, batch_size=4), out, progress=False)
    assert all(loss == loss and loss < 100 for loss in ok.losses)


def test_weights_that_overflow_fp16_are_not_saved(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    lent = {n: p.requires_grad for n, p in tiny.model.named_parameters()}
    peft_model = get_peft_model(tiny.model, LoraConfig(r=1, target_modules="all-linear", task_type="CAUSAL_LM"))
    try:
        name, param = next((n, p) for n, p in peft_model.named_parameters() if "lora_B" in n)
        with torch.no_grad():
            param.fill_(1e6)  # finite in float32, infinite once cast to float16 (max 65504)
        with pytest.raises(RanksweepError, match="non-finite weights .* in fp16; nothing was saved: lower the "
                           "learning rate, or save in fp32"):
            save_adapter(peft_model, tmp_path / "sft", "fp16", {}, [])
    finally:
        peft_model.unload()
        for n, p in tiny.model.named_parameters():
            p.requires_grad_(lent[n])
    assert list(tmp_path.iterdir()) == []


def test_a_killed_save_leaves_scratch_that_the_next_save_removes(tiny, examples, tmp_path):
    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has exited: its scratch folder is an orphan
    orphan = tmp_path / f".sft-r2-abc.tmp-{host}-{dead_pid}-k1ll3d00"
    orphan.mkdir()
    (orphan / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    live = tmp_path / f".sft-r4-def.tmp-{host}-{os.getpid()}-l1ve0000"  # a save still running in this process
    live.mkdir()
    foreign = tmp_path / f".sft-r8.tmp-otherhost-{dead_pid}-abcdefgh"  # another machine's, on a shared folder
    foreign.mkdir()
    train_adapter(tiny, examples, TrainConfig(kind="sft", rank=1, batch_size=8), tmp_path / "sft-r1", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, "sft-r1"])


TRAIN = ["train", "sft", "--rank", "1", "--base-model", "tiny", "--device", "cpu", "--batch-size", "8",
         "--max-examples", "8", "--epochs", "1"]


@pytest.mark.fast
def test_train_refuses_a_folder_that_is_not_an_adapter_before_any_work(capsys, tmp_path):
    out = tmp_path / "d"
    (out / "homework").mkdir(parents=True)
    (out / "homework" / "sft.py").write_text("code\n")
    before = tree(tmp_path)
    code, _, err = run(capsys, *TRAIN, "--out", out, "--force")
    assert code == 2
    assert err.strip() == (f"ranksweep: error: --out '{out}' already exists and is not a ranksweep adapter folder; "
                           "ranksweep never replaces files it did not write: choose a new path or remove it yourself.")
    assert tree(tmp_path) == before


def test_train_replaces_an_adapter_folder_only_with_force(capsys, tmp_path):
    out = tmp_path / "sft_model"
    code, _, err = run(capsys, *TRAIN, "--out", out)
    assert code == 0, err
    assert is_adapter_folder(out)
    first = tree(out)
    code, _, err = run(capsys, *TRAIN, "--out", out, "--seed", "1")
    assert code == 2 and "already holds a ranksweep adapter folder; pass --force to replace it" in err
    assert tree(out) == first
    (out / "notes.txt").write_text("mine\n")  # an adapter folder with a user's file in it is not ours to replace
    code, _, err = run(capsys, *TRAIN, "--out", out, "--seed", "1", "--force")
    assert code == 2 and "is not a ranksweep adapter folder" in err
    (out / "notes.txt").unlink()
    code, _, err = run(capsys, *TRAIN, "--out", out, "--seed", "1", "--force")
    assert code == 0, err
    assert json.loads((out / "ranksweep.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft_model"]


def test_train_into_an_empty_folder_is_fine(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, *TRAIN, "--out", tmp_path / "empty")
    assert code == 0, err
    assert is_adapter_folder(tmp_path / "empty")


def test_launch_names_its_own_flags_when_rejection_sampling_keeps_nothing(capsys, tmp_path, monkeypatch):
    from small_data import write_small_data

    write_small_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKSWEEP_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "launch", "--study", "s", "--base-model", "tiny", "--device", "cpu", "--preset", "quick",
                       "--train-data", "train.json", "--valid-data", "valid.json", "--sft-ranks", "1",
                       "--rft-ranks", "1", "--trials", "1", "--max-examples", "8", "--questions", "1",
                       "--rft-questions", "1", "--rft-samples", "1", "--no-progress")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("ranksweep: error: Rejection sampling kept none of 1 questions"), err
    assert "(launch: --rft-samples, --rft-questions; rft-data: --samples, --questions)" in last


def test_printed_commands_paste_safely_into_a_shell(capsys, tmp_path, monkeypatch):
    from small_data import write_small_data

    write_small_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    name = "it's $(touch pwned) `touch pwned2` & more"
    code, out, err = run(capsys, "launch", "--study", name, "--base-model", "tiny", "--device", "cpu",
                         "--preset", "quick", "--train-data", "train.json", "--valid-data", "valid.json",
                         "--rft-data", "rft.json", "--sft-ranks", "1", "--rft-ranks", "1", "--trials", "1",
                         "--max-examples", "8", "--questions", "2", "--no-progress")
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("See it with: ")]
    status, report = line.removeprefix("See it with: ").split("   and: ")
    assert status.startswith("ranksweep status --study ")
    # What bash does with the pasted line: the name arrives as one word, nothing inside it runs.
    words = subprocess.run(["bash", "-c", "printf '%s\\n' " + status.removeprefix("ranksweep ")],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines()
    assert words == ["status", "--study", name, "--storage", "sqlite:///studies.db"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert report.startswith("ranksweep report --study ")


def _open_and_create(url: str, barrier, results) -> None:
    import optuna

    from sweep.storage import open_storage

    barrier.wait()  # every process opens the brand-new file at the same moment
    try:
        optuna.create_study(study_name=f"s{os.getpid()}", storage=open_storage(url, must_exist=False))
        results.put("ok")
    except Exception as exc:  # reported, so the assertion shows what a loser saw
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_launches_opening_one_new_sqlite_file_at_once_all_succeed(tmp_path):
    import multiprocessing

    import optuna

    import sweep.storage  # noqa: F401  imported before forking, so every child starts at once

    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):  # before the fix, 9 of 10 such rounds had a loser ("table ... already exists")
        url = f"sqlite:///{tmp_path}/new-{round_}.db"
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_and_create, args=(url, barrier, results)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 3
        assert len(optuna.get_all_study_names(url)) == 3


@pytest.mark.fast
def test_a_bare_postgresql_url_gets_the_driver_that_is_installed():
    from sweep.storage import with_driver

    def only(*names):
        return lambda name: name in names

    url = "postgresql://user:pw@db.example:5432/ranksweep"
    # SQLAlchemy 2.1 would read the bare form as psycopg 3; the postgres extra installs psycopg2.
    assert with_driver(url, only("psycopg2")) == "postgresql+psycopg2://user:pw@db.example:5432/ranksweep"
    assert with_driver(url, only("psycopg2", "psycopg")) == "postgresql+psycopg2://user:pw@db.example:5432/ranksweep"
    assert with_driver(url, only("psycopg")) == "postgresql+psycopg://user:pw@db.example:5432/ranksweep"
    # With neither, psycopg2's import error names the driver the extra installs.
    assert with_driver(url, only()) == "postgresql+psycopg2://user:pw@db.example:5432/ranksweep"
    assert with_driver("postgres://h/db", only("psycopg2")) == "postgresql+psycopg2://h/db"  # Heroku's spelling
    for untouched in ("postgresql+psycopg://h/db", "postgresql+psycopg2://h/db", "sqlite:///studies.db",
                      "mysql://h/db"):
        assert with_driver(untouched, only("psycopg2")) == untouched


@pytest.mark.fast
def test_the_storage_opener_itself_maps_a_bare_url_and_refuses_memory():
    """Library callers (not only the CLI) get the same: the installed psycopg2 is what fails to connect, not a
    missing psycopg 3 import; an in-memory SQLite is refused."""
    from postgres import closed_port

    from sweep.storage import open_storage

    with pytest.raises(RanksweepError) as caught:
        open_storage(f"postgresql://ranksweep:s3cret@127.0.0.1:{closed_port()}/db")
    text = str(caught.value)
    assert "Connection refused" in text and "Failed to import" not in text, text
    assert "postgresql+psycopg2://ranksweep:***@127.0.0.1" in text and "s3cret" not in text
    with pytest.raises(RanksweepError, match="in-memory database that keeps nothing"):
        open_storage("sqlite://", must_exist=False)


@pytest.mark.fast
def test_passwords_are_masked_in_every_url_form():
    from sweep.storage import masked

    assert masked("at postgresql+psycopg2://me:hunter2@db:5432/s now") == \
        "at postgresql+psycopg2://me:***@db:5432/s now"
    assert masked("postgresql://me:p%40ss%2Fw@db/s") == "postgresql://me:***@db/s"
    assert masked("postgresql://db/s?user=me&password=hunter2&sslmode=require") == \
        "postgresql://db/s?user=me&password=***&sslmode=require"
    assert masked("sqlite:///s.db?PASSWORD=hunter2") == "sqlite:///s.db?PASSWORD=***"
    for plain in ("sqlite:///studies.db", "postgresql://me@db/s", "see http://127.0.0.1:8080/dashboard"):
        assert masked(plain) == plain


def test_a_storage_password_shows_nowhere_ranksweep_prints_or_writes(capsys, tmp_path, monkeypatch):
    """A real study whose URL carries a password (SQLite ignores it, with a warning): launch's lines, status, the
    report's summary and page show *** instead."""
    from small_data import write_small_data

    write_small_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    storage = "sqlite:///studies.db?password=s3cret"
    code, out, err = run(capsys, "launch", "--study", "pw", "--storage", storage, "--base-model", "tiny", "--device",
                         "cpu", "--preset", "quick", "--train-data", "train.json", "--valid-data", "valid.json",
                         "--rft-data", "rft.json", "--sft-ranks", "1", "--rft-ranks", "1", "--trials", "1",
                         "--max-examples", "8", "--questions", "2", "--no-progress")
    assert code == 0, err
    assert "--storage 'sqlite:///studies.db?password=***'" in out
    printed = out + err
    for args in (["status", "--study", "pw"], ["report", "--study", "pw", "--out", "report"]):
        code, out, err = run(capsys, *args, "--storage", storage)
        assert code == 0, err
        printed += out + err
    assert "s3cret" not in printed
    page = (tmp_path / "report" / "report.html").read_text()
    assert "password=***" in page
    assert not [p for p in (tmp_path / "report").iterdir() if b"s3cret" in p.read_bytes()]


def test_a_killed_json_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    from trainers.data import write_json_atomic

    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    orphan = tmp_path / f".rft.json.tmp-{host}-{dead_pid}-k1ll3d00.tmp"  # a write killed before its rename
    orphan.write_text('[["half a')
    empty = tmp_path / f".sft-r2.tmp-{host}-{dead_pid}-emptydir"  # a save killed before it wrote a file
    empty.mkdir()
    live = tmp_path / f".valid.json.tmp-{host}-{os.getpid()}-l1ve0000.tmp"  # a write still running here
    live.write_text("[")
    foreign = tmp_path / f".train.json.tmp-otherhost-{dead_pid}-abcdefgh.tmp"  # another machine's
    foreign.write_text("[")
    mine = tmp_path / ".notes.tmp-by-hand"  # a user's file that merely looks alike
    mine.write_text("keep me")
    write_json_atomic(tmp_path / "rft.json", [["q", 1.0, "<answer>1</answer>"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, mine.name, "rft.json"])
    assert json.loads((tmp_path / "rft.json").read_text()) == [["q", 1.0, "<answer>1</answer>"]]


@pytest.mark.fast
def test_a_json_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    from trainers.data import write_json_atomic

    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "new.json", [])
        old = tmp_path / "shared.json"
        old.write_text("[]")
        old.chmod(0o664)
        write_json_atomic(old, [["q", 1.0]])
    finally:
        os.umask(umask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644  # as any new file, not mkstemp's 0o600
    assert old.stat().st_mode & 0o777 == 0o664 and json.loads(old.read_text()) == [["q", 1.0]]


@contextmanager
def read_only(path: Path):
    """`path` (a file or a folder) refuses writes while inside, for root too: root ignores modes, but not the
    immutable flag (chattr +i; ext4 and similar)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without the immutable flag: nothing here refuses root a write")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_storage_is_one_sentence_from_every_writing_command(capsys, tmp_path, what):
    from cli_runner import run_cli
    from small_data import write_small_data
    from study_fixtures import write_sweep_study

    data = write_small_data(tmp_path)
    (tmp_path / "store").mkdir()
    db = tmp_path / "store" / "studies.db"
    url = f"sqlite:///{db}"
    write_sweep_study(url)
    before = db.read_bytes()
    launch = ["launch", "--study", "sweep", "--storage", url, "--base-model", "tiny", "--device", "cpu", "--preset",
              "quick", "--train-data", data / "train.json", "--valid-data", data / "valid.json", "--rft-data",
              data / "rft.json", "--artifacts", tmp_path / "artifacts", "--no-progress"]
    worker = ["worker", "--study", "sweep", "--storage", url, "--device", "cpu", "--artifacts", tmp_path / "artifacts",
              "--no-progress"]
    with read_only(db if what == "file" else db.parent):
        for args in (launch, worker):
            code, out, err = run(capsys, *args)
            assert code == 2 and out == "", err
            assert err.count("\n") == 1 and "is read-only" in err
            assert "status, report, export and dashboard --read-only still read it" in err
        # A subprocess: were the storage not refused, the dashboard would serve until stopped.
        served = run_cli("dashboard", "--study", "sweep", "--storage", url, "--port", "0", cwd=tmp_path, timeout=120)
        assert served.returncode == 2 and served.stderr.count("\n") == 1 and "is read-only" in served.stderr
        code, out, _ = run(capsys, "status", "--study", "sweep", "--storage", url)
        assert code == 0 and "COMPLETE" in out
    assert db.read_bytes() == before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "artifacts").exists()


def test_two_trainings_into_one_new_folder_at_once_never_both_succeed(tmp_path):
    from cli_runner import ROOT

    out = tmp_path / "race"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = {rank: subprocess.Popen([sys.executable, "-m", "sweep", *TRAIN, "--rank", str(rank), "--out", str(out)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (1, 2)}
    results = {rank: (p.wait(timeout=600), p.stderr.read()) for rank, p in procs.items()}
    for p in procs.values():
        p.stdout.close()
        p.stderr.close()
    [winner] = [rank for rank, (code, _) in results.items() if code == 0]
    [(code, err)] = [result for rank, result in results.items() if rank != winner]
    # The loser either found the folder taken before training, or lost the claim after it: one sentence either way.
    errors = [line for line in err.splitlines() if line.startswith("ranksweep: error:")]  # after progress bars
    assert code == 2 and len(errors) == 1 and str(out) in errors[0] and "Traceback" not in err, err
    assert is_adapter_folder(out)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]  # no scratch left behind
