"""`launch --trainer homework`: trials made by the homework's own commands in scratch copies of the tree,
zipped by its bundle.py and scored by its grader; the user's tree is never touched."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna

from homework_fixtures import CHAT, FIXTURE, homework_copy, tree_digest

BUDGET_MB = 0.4  # tiny adapters are 8 KiB per rank in fp32: any pair with rank 64 is over


def launch_args(root: Path, tree: Path, study: str, trials: int, sft="2,4,64", rft="2,4,64") -> list:
    return ["launch", "--study", study, "--storage", f"sqlite:///{root}/studies.db", "--base-model", "tiny",
            "--device", "cpu", "--preset", "quick", "--sft-ranks", sft, "--rft-ranks", rft,
            "--budget-mb", str(BUDGET_MB), "--trials", str(trials), "--homework", tree, "--trainer", "homework",
            "--artifacts", root / "artifacts", "--no-progress"]


def user_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_a_homework_mode_study_records_real_zips_and_grader_points(ranksweep, tmp_path):
    tree = user_tree(tmp_path)
    before = tree_digest(tree)
    result = ranksweep(*launch_args(tmp_path, tree, "hw", trials=3))
    assert result.returncode == 0, result.stderr
    assert tree_digest(tree) == before  # byte-identical: every command ran in a scratch copy

    study = optuna.load_study(study_name="hw", storage=f"sqlite:///{tmp_path}/studies.db")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    trials_root = tmp_path / "artifacts" / "homework-trials" / "hw"
    ranks_used = {("sft", t.params["sft_rank"]) for t in done} | {("rft", t.params["rft_rank"]) for t in done}
    for t in done:
        a = t.user_attrs
        assert 64 not in (a["sft_rank"], a["rft_rank"])  # over-budget pairs are never run
        (folder,) = trials_root.glob(f"sft{a['sft_rank']}-rft{a['rft_rank']}-*")
        zip_path = folder / "submission.zip"
        assert a["size_bytes"] == zip_path.stat().st_size  # the real zip, to the byte
        assert a["size_bytes"] <= a["size_bytes_predicted"] <= int(BUDGET_MB * 2**20)
        # The ranks were written into the scratch copy's code: the zipped adapters have them.
        import zipfile

        with zipfile.ZipFile(zip_path) as archive:
            for kind in ("sft", "rft"):
                config = json.loads(archive.read(f"homework/{kind}_model/adapter_config.json"))
                assert config["r"] == a[f"{kind}_rank"]
                assert a[f"{kind}_alpha"] == config["lora_alpha"] == 4 * config["r"]  # the tree's own alpha
        # Points and accuracies are the grader's `N / M` lines, as it printed them.
        log = (folder / "grader.log").read_text()
        printed = re.findall(r"(SFT|RFT) answer accuracy\s+accuracy ([\d.]+)\s+\[ (\d+) / (\d+) \]", log)
        assert [(k, m) for k, _, _, m in printed] == [("SFT", "25"), ("RFT", "25")]
        for kind, accuracy, points, _ in printed:
            assert a[f"{kind.lower()}_accuracy"] == float(accuracy)
        assert a["sft_points"] == float(printed[0][2])
        assert (folder / "train-sft.log").exists() or a["sft_cache_hit"]
    # Each adapter was trained once, by its rank alone: a new RFT rank never retrained SFT.
    entries = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1]
                     for p in (tmp_path / "artifacts" / "adapters").iterdir())
    assert entries == sorted(f"{k}-r{r}" for k, r in ranks_used)
    trained = sum(not t.user_attrs[f"{k}_cache_hit"] for t in done for k in ("sft", "rft"))
    assert trained == len(ranks_used)
    # status counts the homework's own trainings as trainings, none as derived adapters.
    status = ranksweep("status", "--study", "hw", "--storage", f"sqlite:///{tmp_path}/studies.db", "--json")
    counts = json.loads(status.stdout)["trainings"]
    assert counts["sft"] == sum(k == "sft" for k, _ in ranks_used) and counts["rft"] == sum(k == "rft" for k, _ in
                                                                                                ranks_used)
    assert (counts["derived_sft"], counts["derived_rft"]) == (0, 0)


def test_a_failing_command_fails_its_trial_with_its_last_lines(ranksweep, tmp_path):
    tree = user_tree(tmp_path)
    (tree / "ranksweep.toml").write_text(
        "[homework]\ntrain_rft = \"{python} -c 'import sys; print(\\\"no rft data here\\\"); sys.exit(3)'\"\n")
    result = ranksweep(*launch_args(tmp_path, tree, "broken", trials=2, sft="2", rft="2,4"))
    # The study goes on, then runs out of pairs with none complete: that is no success.
    assert result.returncode == 1 and "every trial of study 'broken' failed" in result.stderr, result.stderr
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{tmp_path}/studies.db")
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 2
    for t in failed:
        assert "RFT training" in t.user_attrs["error"] and "exit code 3" in t.user_attrs["error"]
        assert "no rft data here" in t.user_attrs["error"]
        # The label names the whole command, program included, quoted so that it pastes back into bash.
        label = re.search(r"RFT training \((.*)\) failed with exit code 3", t.user_attrs["error"]).group(1)
        pasted = subprocess.run(["bash", "-c", label], capture_output=True, text=True)
        assert (pasted.returncode, pasted.stdout) == (3, "no rft data here\n")
    assert len(list((tmp_path / "artifacts" / "adapters").glob("sft-r2-*"))) == 1  # trained once, then cached


def test_a_command_that_cannot_start_is_refused_before_any_trial(ranksweep, tmp_path):
    tree = user_tree(tmp_path)
    (tree / "ranksweep.toml").write_text('[homework]\ntrain_sft = "no-such-trainer train"\n')
    result = ranksweep(*launch_args(tmp_path, tree, "never", trials=1))
    assert result.returncode == 2
    assert "train_sft command" in result.stderr and "'no-such-trainer' is not a program" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "artifacts").exists()


def test_grader_lines_are_read_into_points_and_accuracies():
    from sweep.homework.points import parse_grader_output

    scores = parse_grader_output(
        "SFT model\nLoading weights: 100%|##########| 20/20 [00:00<00:00]\n"
        "  - answer accuracy   accuracy 0.540   [ 18 / 25 ]\nRFT model\n"
        "  - answer accuracy   [ 12.5 / 25 ]\n  - extra credit      [ 0 / 5 ]\nTotal 30 / 55\n")
    assert (scores["sft"].points, scores["sft"].max_points, scores["sft"].accuracy) == (18.0, 25.0, 0.54)
    assert (scores["rft"].points, scores["rft"].max_points, scores["rft"].cases) == (12.5, 30.0, 2)
    assert abs(scores["rft"].accuracy - 0.65) < 1e-12  # read back from 12.5 of 25 points


def constant_tree(tmp_path: Path, name: str, prompt_format: str) -> Path:
    """The fixture with `prompt_format` and data whose every answer is 7 (the tiny model learns it)."""
    from trainers.data import write_json_atomic

    tree = homework_copy(tmp_path / name, prompt_format)
    train = [[f"How many gram are there per {n} kg?", 7.0] for n in range(1, 25)]
    write_json_atomic(tree / "data" / "train.json", train)
    write_json_atomic(tree / "data" / "valid.json", [[f"How many meter are there per {n} km?", 7.0] for n in range(1, 9)])
    write_json_atomic(tree / "data" / "rft.json", [[q, a, "It is seven. <answer>7</answer>"] for q, a in train])
    return tree


def test_ranksweep_trained_adapters_are_checked_with_the_homework_code(ranksweep, tmp_path):
    raw_tree, chat_tree = constant_tree(tmp_path, "raw", "{question}"), constant_tree(tmp_path, "chat", CHAT)
    storage = f"sqlite:///{tmp_path}/studies.db"

    def launch(tree, study, *extra):
        return ranksweep("launch", "--study", study, "--storage", storage, "--base-model", "tiny", "--device", "cpu",
                         "--preset", "quick", "--sft-ranks", "8", "--rft-ranks", "8", "--lrs", "1e-2", "--epochs", "15",
                         "--batch-size", "8", "--questions", "8", "--trials", "1", "--homework", tree,
                         "--artifacts", tmp_path / "artifacts", "--no-progress", *extra)

    # The homework asks the raw question, as ranksweep trains: the first adapter's check passes.
    result = launch(raw_tree, "agree")
    assert result.returncode == 0, result.stderr

    # Exported into a tree whose format_prompt builds a chat prompt: graded again there, and warned about.
    exported = ranksweep("export", "--homework", chat_tree, "--storage", storage, "--study", "agree",
                         "--with-adapters", "--base-model", "tiny")
    assert exported.returncode == 0, exported.stderr
    assert re.search(r"warning: the homework's own code graded the SFT adapter 0\.0% .* ranksweep graded it 100\.0%",
                     exported.stdout), exported.stdout
    assert "--prompt-template" in exported.stdout
    quiet = ranksweep("export", "--homework", raw_tree, "--storage", storage, "--study", "agree",
                      "--with-adapters", "--base-model", "tiny")
    assert quiet.returncode == 0 and "warning" not in quiet.stdout, quiet.stdout

    # A study on the chat tree stops after its first adapter, with both numbers and what to do.
    stopped = launch(chat_tree, "disagree")
    assert stopped.returncode == 2
    assert "Stopped: the homework's own code graded the SFT adapter 0.0%" in stopped.stderr
    assert "ranksweep graded it 100.0%" in stopped.stderr and "--prompt-template" in stopped.stderr

    # Trained and graded on the homework's text, the same study setup agrees and completes.
    matched = launch(chat_tree, "matched", "--prompt-template", CHAT)
    assert matched.returncode == 0, matched.stderr
    trial = optuna.load_study(study_name="matched", storage=storage).best_trials[0]
    assert trial.user_attrs["sft_accuracy"] == 1.0


def test_a_printed_homework_command_pastes_back_into_bash(tmp_path):
    """The `$ command` line of a failing command's output is shlex-quoted: pasted into bash it runs the same words.
    A command run without a lasting log names no log file in its error (its scratch log is gone by then)."""
    from sweep.homework.run import HomeworkCommandError, run_logged

    args = [sys.executable, "-c", "import sys; print('boom'); sys.exit(1)"]
    try:
        run_logged(args, cwd=tmp_path, log=None, timeout=60, what="The homework's check")
    except HomeworkCommandError as exc:
        message = str(exc)
    else:
        raise AssertionError("the command failed, so run_logged must raise")
    assert message.startswith("The homework's check failed with exit code 1; its last lines:\n"), message
    printed = next(line.strip()[2:] for line in message.splitlines() if line.strip().startswith("$ "))
    pasted = subprocess.run(["bash", "-c", printed], capture_output=True, text=True)
    assert (pasted.returncode, pasted.stdout) == (1, "boom\n")
    assert "boom" in message and not list(tmp_path.iterdir())  # nothing left behind, no path named


def test_a_failing_bundle_while_measuring_the_tree_prints_its_output_not_a_deleted_log(ranksweep, tmp_path):
    tree = user_tree(tmp_path)
    (tree / "ranksweep.toml").write_text(
        "[homework]\nbundle = \"{python} -c 'import sys; print(\\\"bundle broke\\\"); sys.exit(4)'\"\n")
    result = ranksweep(*launch_args(tmp_path, tree, "nobundle", trials=1))
    assert result.returncode == 2
    assert "Measuring the homework without adapters" in result.stderr and "bundle broke" in result.stderr
    assert "exit code 4" in result.stderr
    assert ".log" not in result.stderr and "ranksweep-rest-" not in result.stderr  # no path to a deleted scratch log


def test_adapters_trained_by_a_killed_trial_count_as_trainings(cli, ranksweep, tmp_path):
    """The tree's grader kills ranksweep with SIGKILL (kill -9) once both adapters are trained and cached: the
    trial stays RUNNING, and status still counts the two trainings it paid for."""
    tree = user_tree(tmp_path)
    (tree / "ranksweep.toml").write_text(
        "[homework]\ngrader = \"{python} -c 'import os, signal; os.kill(os.getppid(), signal.SIGKILL)'\"\n")
    killed = cli(*launch_args(tmp_path, tree, "killed", trials=1, sft="2", rft="4"))
    assert killed.returncode == -9, killed.stderr
    storage = f"sqlite:///{tmp_path}/studies.db"
    assert [t.state.name for t in optuna.load_study(study_name="killed", storage=storage).get_trials()] == ["RUNNING"]
    doc = json.loads(ranksweep("status", "--study", "killed", "--storage", storage, "--json").stdout)
    assert doc["trainings"] == {"sft": 1, "rft": 1, "reused": 0, "derived_sft": 0, "derived_rft": 0}
    table = ranksweep("status", "--study", "killed", "--storage", storage).stdout
    assert "trainings run: 1 SFT + 1 RFT; adapters reused from the cache: 0" in table


def test_a_rank_path_leaving_the_tree_is_refused_before_the_study_exists(ranksweep, tmp_path):
    tree = user_tree(tmp_path)
    (tmp_path / "outside.py").write_text("DEFAULT_LORA_RANK = 8\n")
    (tree / "ranksweep.toml").write_text('[homework]\nsft_rank = "../outside.py:DEFAULT_LORA_RANK"\n')
    result = ranksweep(*launch_args(tmp_path, tree, "escape", trials=1))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"'../outside.py' is outside the homework folder {tree}" in result.stderr
    assert "homework-trials" not in result.stderr  # the user's path, not a scratch copy's
    assert not (tmp_path / "studies.db").exists() or "escape" not in optuna.get_all_study_names(
        f"sqlite:///{tmp_path}/studies.db")
