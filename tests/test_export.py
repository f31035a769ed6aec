"""`ranksweep export` on a real homework-shaped tree and real studies: only rank literals change, every
change is backed up, dry runs and repeats write nothing, and the printed zip size is the real one."""

from __future__ import annotations

import json
import re
import tomllib
import zipfile
from pathlib import Path

import pytest

from study_fixtures import (BUDGET_BYTES, SWEEP, TrialSpec, config, measured_bytes, trial_attrs,
                            write_single_trial_study, write_sweep_study, write_unsampled_best_study)
from sweep.bundle import bundle_members
from sweep.cli import main
from sweep.commands.export import render_toml
from sweep.storage import mark_study

SFT = (b'"""SFT training of the homework model."""\n\nDEFAULT_LORA_RANK: int = 32  # rank of the adapter\n\n\n'
       b"def train_model(output_dir: str):\n    DEFAULT_LORA_RANK = 4  # a local of the same name\n"
       b"    return dict(r=DEFAULT_LORA_RANK)\n")
RFT = ('"""RFT — rejection sampling, données ✓."""\r\nRFT_LORA_RANK=64\r\n'
       "lora_alpha = max(RFT_LORA_RANK * 4, 4)\r\n").encode("utf-8")
# The sweep study's recommended pair (tests/study_fixtures.py): trial 1, SFT 8 / RFT 16, alpha ratio 4.
SFT_AFTER = SFT.replace(b"int = 32  #", b"int = 8  #")
RFT_AFTER = RFT.replace(b"RANK=64", b"RANK=16")


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/studies.db"
    write_sweep_study(url)
    return url


@pytest.fixture
def hw(tmp_path) -> Path:
    """A homework root: homework/ with the two rank files, notes, a cache folder and a data file."""
    root = tmp_path / "hw3"
    (root / "homework" / "__pycache__").mkdir(parents=True)
    (root / "homework" / "sft.py").write_bytes(SFT)
    (root / "homework" / "rft.py").write_bytes(RFT)
    (root / "homework" / "__init__.py").write_bytes(b"")
    (root / "homework" / "README.md").write_text("notes stay out of the zip\n")
    (root / "homework" / "__pycache__" / "sft.cpython-311.pyc").write_bytes(b"\0" * 64)
    (root / "homework" / "conversion_utils.py").write_text("".join(f"UNIT_{i} = {i * 37 % 101}\n" for i in range(300)))
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under root."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def export(capsys, *args) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def printed_zip_bytes(out: str) -> int:
    return int(re.search(r"submission zip[^:]*: [\d.]+ MiB \(([\d,]+) bytes\)", out).group(1).replace(",", ""))


def zipfile_bytes(root: Path, tmp_path: Path) -> int:
    """The submission zip written to disk by zipfile from the bundle's members."""
    path = tmp_path / "submission.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, source in bundle_members(root):
            archive.write(source, arcname)
    return path.stat().st_size


def backups(root: Path) -> list[Path]:
    folder = root / ".ranksweep" / "backups"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_export_rewrites_only_the_rank_literals_and_backs_up(cli, hw, storage, tmp_path):
    result = cli("export", "--homework", hw, "--storage", storage, "--study", "sweep")
    assert result.returncode == 0, result.stderr
    assert (hw / "homework" / "sft.py").read_bytes() == SFT_AFTER  # comment and local kept
    assert (hw / "homework" / "rft.py").read_bytes() == RFT_AFTER  # CRLF and non-ASCII kept
    assert "SFT rank 8, RFT rank 16" in result.stdout
    assert "-DEFAULT_LORA_RANK: int = 32  # rank of the adapter\n+DEFAULT_LORA_RANK: int = 8  # rank" in result.stdout
    [backup] = backups(hw)
    assert (backup / "homework" / "sft.py").read_bytes() == SFT
    assert (backup / "homework" / "rft.py").read_bytes() == RFT
    assert sorted(p.name for p in backup.rglob("*") if p.is_file()) == ["rft.py", "sft.py"]
    assert printed_zip_bytes(result.stdout) == zipfile_bytes(hw, tmp_path)
    assert "bytes) of the 50.00 MiB (52,428,800 bytes) budget: fits" in result.stdout
    assert not any(arc.startswith(".ranksweep") or not arc.startswith("homework/") for arc, _ in bundle_members(hw))


@pytest.mark.fast
def test_second_export_changes_nothing(capsys, hw, storage):
    assert export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")[0] == 0
    before = snapshot(hw)
    code, out, _ = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 0 and "already up to date" in out and "---" not in out
    assert snapshot(hw) == before and len(backups(hw)) == 1


@pytest.mark.fast
def test_dry_run_writes_nothing(capsys, hw, storage):
    before = snapshot(hw)
    code, out, _ = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep", "--dry-run")
    assert code == 0 and "+RFT_LORA_RANK=16" in out and "nothing written" in out
    assert snapshot(hw) == before


@pytest.mark.fast
def test_over_budget_writes_nothing_unless_forced(capsys, hw, storage):
    before = snapshot(hw)
    args = ("--homework", hw, "--storage", storage, "--study", "sweep", "--budget-mb", "0.001")
    code, out, err = export(capsys, *args)
    assert code == 2 and out == ""
    # Under 0.01 MiB both would read "0.00 MiB": the bytes tell them apart.
    assert re.fullmatch(r"ranksweep: error: This export would make the submission zip 0\.\d\d MiB \([\d,]+ bytes\), over "
                        r"the 0\.00 MiB \(1,048 bytes\) budget, so nothing was written: export a smaller pair "
                        r"\(ranksweep report lists them\), or pass --force to write it anyway\.\n", err), err
    assert snapshot(hw) == before
    code, out, _ = export(capsys, *args, "--force")
    assert code == 1 and "OVER by" in out and "of the 0.00 MiB (1,048 bytes) budget" in out
    assert (hw / "homework" / "sft.py").read_bytes() == SFT_AFTER


@pytest.mark.fast
def test_a_read_only_rank_file_is_refused_before_anything_is_written(capsys, hw, storage):
    (hw / "homework" / "rft.py").chmod(0o444)
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2
    assert err == ("ranksweep: error: homework/rft.py is read-only, so nothing was written; make it writable "
                   "(chmod u+w) and export again, or use --dry-run and edit it by hand.\n")
    assert snapshot(hw) == before and backups(hw) == []


@pytest.mark.fast
def test_a_rank_file_in_a_read_only_folder_is_refused_before_the_other_is_written(capsys, hw, storage):
    (hw / "locked").mkdir()
    (hw / "locked" / "rft.py").write_bytes(RFT)
    (hw / "locked").chmod(0o555)
    try:
        before = snapshot(hw)
        code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep",
                              "--rft-var", "locked/rft.py:RFT_LORA_RANK")
        assert code == 2
        assert err == ("ranksweep: error: Cannot write in 'locked' (read-only or not a folder), so nothing was "
                       "written; make it writable and export again.\n")
        assert snapshot(hw) == before  # sft.py, first in line, was not rewritten either
    finally:
        (hw / "locked").chmod(0o755)


@pytest.mark.fast
def test_a_write_that_fails_midway_puts_back_the_files_already_written(capsys, monkeypatch, hw, storage):
    import errno

    import sweep.changeset

    real = sweep.changeset.write_atomic

    def disk_full_on_rft(path, data):  # the disk fills up between the two rank files
        if path == hw / "homework" / "rft.py":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(sweep.changeset, "write_atomic", disk_full_on_rft)
    code, out, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2
    assert err == ("ranksweep: error: Writing homework/rft.py failed (No space left on device); homework/sft.py was "
                   "put back as before, so nothing changed.\n")
    assert (hw / "homework" / "sft.py").read_bytes() == SFT
    assert (hw / "homework" / "rft.py").read_bytes() == RFT


@pytest.mark.fast
def test_a_backup_that_fails_leaves_no_half_backup_and_changes_nothing(capsys, monkeypatch, hw, storage):
    import errno

    import sweep.changeset

    assert export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep", "--trial", "6")[0] == 0
    [earlier] = backups(hw)
    real = sweep.changeset.write_atomic

    def disk_full_in_backups(path, data):
        if ".ranksweep" in path.parts and path.name == "sft.py":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(sweep.changeset, "write_atomic", disk_full_in_backups)
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2 and err == ("ranksweep: error: Backing up the files to replace failed (No space left on device); "
                                 "nothing was changed.\n")
    assert snapshot(hw) == before and backups(hw) == [earlier]


@pytest.mark.fast
def test_a_symlinked_rank_file_stays_a_link(capsys, hw, storage):
    (hw / "shared").mkdir()
    (hw / "shared" / "ranks.py").write_bytes(RFT)
    (hw / "homework" / "rft.py").unlink()
    (hw / "homework" / "rft.py").symlink_to("../shared/ranks.py")
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 0, err
    assert (hw / "homework" / "rft.py").is_symlink()
    assert (hw / "shared" / "ranks.py").read_bytes() == RFT_AFTER
    [backup] = backups(hw)
    assert (backup / "homework" / "rft.py").read_bytes() == RFT


@pytest.mark.fast
def test_config_file_in_a_read_only_folder_is_refused_before_the_study_is_read(capsys, tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        code, _, err = export(capsys, "--to", tmp_path / "ro" / "r.json", "--storage", f"sqlite:///{tmp_path}/no.db")
        assert code == 2 and f"Cannot write --to '{tmp_path / 'ro' / 'r.json'}': '{tmp_path / 'ro'}' is not a " \
            "writable folder" in err
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.fast
def test_a_second_module_level_assignment_is_refused_with_both_lines(capsys, hw, storage):
    (hw / "homework" / "rft.py").write_bytes(RFT + b"if True:\r\n    RFT_LORA_RANK = 32\r\n")
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2
    assert "RFT_LORA_RANK is assigned 2 times at module level (homework/rft.py:2, homework/rft.py:5)" in err
    assert snapshot(hw) == before  # the valid SFT edit was not written either


@pytest.mark.fast
def test_a_non_literal_rank_is_refused(capsys, hw, storage):
    (hw / "homework" / "sft.py").write_bytes(b"import os\nDEFAULT_LORA_RANK = int(os.environ['R'])\n")
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2 and "homework/sft.py:2 sets DEFAULT_LORA_RANK to `int(os.environ['R'])`" in err
    assert snapshot(hw) == before


@pytest.mark.fast
def test_other_spellings_in_one_file(capsys, tmp_path, storage):
    root = tmp_path / "proj"
    (root / "homework").mkdir(parents=True)
    (root / "homework" / "ranks.py").write_bytes(b"SFT_R = 1\nRFT_R = 2  # rft\n")
    code, out, err = export(capsys, "--homework", root, "--storage", storage, "--study", "sweep", "--trial", "6",
                            "--sft-var", "homework/ranks.py:SFT_R", "--rft-var", "homework/ranks.py:RFT_R")
    assert code == 0, err
    assert (root / "homework" / "ranks.py").read_bytes() == b"SFT_R = 4\nRFT_R = 16  # rft\n"  # trial 6 is 4/16


@pytest.mark.fast
def test_not_a_homework_tree_is_refused(capsys, tmp_path, hw, storage):
    (tmp_path / "empty" / "homework").mkdir(parents=True)
    code, _, err = export(capsys, "--homework", tmp_path / "empty", "--storage", storage, "--study", "sweep")
    assert code == 2 and "does not look like a homework folder: homework/sft.py is missing" in err
    (tmp_path / "outside.py").write_bytes(b"R = 1\n")
    before = snapshot(tmp_path)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep",
                          "--sft-var", "../outside.py:R")
    assert code == 2 and "outside the homework folder" in err
    assert snapshot(tmp_path) == before


def test_missing_study_or_storage_exits_2(cli, tmp_path, storage):
    result = cli("export", "--to", tmp_path / "r.json", "--storage", storage, "--study", "nope")
    assert result.returncode == 2 and "No study named 'nope'" in result.stderr
    missing = tmp_path / "none.db"
    result = cli("export", "--to", tmp_path / "r.json", "--storage", f"sqlite:///{missing}")
    assert result.returncode == 2 and "No study storage" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.fast
def test_incomplete_trial_is_refused(capsys, tmp_path, storage):
    code, _, err = export(capsys, "--to", tmp_path / "r.json", "--storage", storage, "--study", "sweep", "--trial", "2")
    assert code == 2 and "Trial 2 of study 'sweep' is PRUNED" in err


@pytest.mark.fast
def test_study_may_be_left_out_only_when_it_is_the_only_one(capsys, tmp_path, storage):
    single = f"sqlite:///{tmp_path}/one.db"
    write_single_trial_study(single)
    assert export(capsys, "--to", tmp_path / "r.json", "--storage", single)[0] == 0
    assert json.loads((tmp_path / "r.json").read_text())["study"] == "single"
    write_sweep_study(single)
    code, _, err = export(capsys, "--to", tmp_path / "r.json", "--storage", single)
    assert code == 2 and "Name the study to export with --study" in err and "single, sweep" in err


@pytest.mark.fast
def test_config_files_round_trip(capsys, tmp_path, storage):
    expected = {"sft": {"rank": 8, "lora_alpha": 32}, "rft": {"rank": 16, "lora_alpha": 64}, "adapter_dtype": "fp32",
                "study": "sweep", "trial": 1, "size_bytes": measured_bytes(SWEEP[1])}
    for name, load in (("lora.json", json.loads), ("lora.toml", tomllib.loads)):
        assert export(capsys, "--to", tmp_path / name, "--storage", storage, "--study", "sweep")[0] == 0
        doc = load((tmp_path / name).read_text(encoding="utf-8"))
        assert {k: v for k, v in doc.items() if k != "points"} == expected
        assert doc["points"] == pytest.approx(trial_attrs(SWEEP[1], BUDGET_BYTES)[0]["points"])
        written = (tmp_path / name).read_bytes()
        code, out, _ = export(capsys, "--to", tmp_path / name, "--storage", storage, "--study", "sweep")
        assert code == 0 and "already up to date" in out and (tmp_path / name).read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora.json", "lora.toml"]


@pytest.mark.fast
def test_a_pair_never_trained_together_has_no_trial(capsys, tmp_path):
    url = f"sqlite:///{tmp_path}/u.db"
    write_unsampled_best_study(url)
    for name in ("u.json", "u.toml"):
        code, out, _ = export(capsys, "--to", tmp_path / name, "--storage", url)
        assert code == 0 and "recommended pair: SFT rank 8, RFT rank 16" in out
    assert json.loads((tmp_path / "u.json").read_text())["trial"] is None
    assert "trial" not in tomllib.loads((tmp_path / "u.toml").read_text())  # TOML has no null


@pytest.mark.fast
def test_toml_strings_are_escaped():
    payload = {"study": 'a "q" \\ tab\t ☃ \x7f', "points": 1e-05, "sft": {"rank": 2, "lora_alpha": 7.5}}
    assert tomllib.loads(render_toml(payload)) == payload


@pytest.mark.fast
def test_homework_flags_are_refused_with_to(capsys, tmp_path, storage):
    code, _, err = export(capsys, "--to", tmp_path / "r.json", "--storage", storage, "--with-adapters")
    assert code == 2 and "Drop --with-adapters: with --to FILE only" in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.fast
def test_config_file_with_other_settings_is_not_overwritten(capsys, tmp_path, storage):
    target = tmp_path / "train.toml"
    target.write_text('lr = 0.001\n[sft]\nrank = 2\n')
    code, _, err = export(capsys, "--to", target, "--storage", storage, "--study", "sweep")
    assert code == 2 and "holds other settings (lr)" in err
    assert target.read_text() == 'lr = 0.001\n[sft]\nrank = 2\n'


def write_adapter(folder: Path, rank: int, seed: int, base_model: str | None) -> Path:
    """A LoRA adapter folder in PEFT's format (weights via safetensors, config as peft writes it), plus the
    model card and training log a trainer leaves beside it, which must never be copied."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        for module, (n_in, n_out) in {"q_proj": (64, 64), "k_proj": (64, 32), "down_proj": (128, 64)}.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, n_in), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((n_out, rank), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(save(tensors, metadata={"format": "pt"}))
    cfg = {"base_model_name_or_path": base_model, "bias": "none", "lora_alpha": 4 * rank, "peft_type": "LORA",
           "r": rank, "target_modules": ["down_proj", "k_proj", "q_proj"], "task_type": "CAUSAL_LM"}
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n")
    (folder / "training_log.csv").write_text("step,loss\n1,2.5\n")
    return folder


def write_adapter_study(storage: str, sft_dir: Path, rft_dir: Path, base_model: str = "tiny") -> None:
    """A study with one complete 2/4 trial whose adapters are the given folders."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    memory = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="tiny", storage=memory, directions=["maximize", "minimize"])
    study.set_user_attr("config", {**config(), "base_model": base_model})
    mark_study(study)
    trial = study.ask()
    attrs, score, size = trial_attrs(TrialSpec(2, 4, 52, 66), BUDGET_BYTES)
    attrs.update(sft_dir=str(sft_dir), rft_dir=str(rft_dir))
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [score, size])
    optuna.copy_study(from_study_name="tiny", from_storage=memory, to_storage=storage)


@pytest.fixture(scope="module")
def adapter_storage(tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    url = f"sqlite:///{folder}/studies.db"
    write_adapter_study(url, write_adapter(folder / "sft-r2", 2, 1, None), write_adapter(folder / "rft-r4", 4, 2, None))
    return url, folder


@pytest.mark.fast
def test_with_adapters_copies_adapter_files_and_dry_run_predicts_the_zip(capsys, hw, adapter_storage, tmp_path):
    url, artifacts = adapter_storage
    old_sft = write_adapter(hw / "homework" / "sft_model", 8, 3, "tiny").joinpath("adapter_model.safetensors")
    old_weights = old_sft.read_bytes()
    args = ("--homework", hw, "--storage", url, "--with-adapters")
    code, dry, _ = export(capsys, *args, "--dry-run")
    assert code == 0 and "submission zip after export" in dry
    code, out, _ = export(capsys, *args)
    assert code == 0
    for kind, rank in (("sft", 2), ("rft", 4)):
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            copied = hw / "homework" / f"{kind}_model" / name
            assert copied.read_bytes() == (artifacts / f"{kind}-r{rank}" / name).read_bytes()
    assert not (hw / "homework" / "rft_model" / "README.md").exists()  # only the adapter files travel
    [backup] = backups(hw)
    assert (backup / "homework" / "sft_model" / "adapter_model.safetensors").read_bytes() == old_weights
    new_size = (artifacts / "sft-r2" / "adapter_model.safetensors").stat().st_size
    assert (f"replace homework/sft_model/adapter_model.safetensors ({len(old_weights):,} bytes → {new_size:,} bytes)"
            in out)
    assert "create homework/rft_model/adapter_model.safetensors (none → " in out
    assert '-  "base_model_name_or_path": "tiny",\n+  "base_model_name_or_path": null,' in out
    assert printed_zip_bytes(dry) == printed_zip_bytes(out) == zipfile_bytes(hw, tmp_path)

    before = snapshot(hw)
    code, out, _ = export(capsys, *args)
    assert code == 0 and "already up to date" in out and snapshot(hw) == before


@pytest.mark.fast
def test_with_adapters_refuses_another_base_model(capsys, hw, adapter_storage):
    url, _ = adapter_storage
    folder = hw / "homework" / "sft_model"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "HuggingFaceTB/SmolLM2-360M-Instruct"}')
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", url, "--with-adapters")
    assert code == 2 and "trained on 'tiny' but homework/sft_model/adapter_config.json names " \
        "'HuggingFaceTB/SmolLM2-360M-Instruct'" in err
    code, _, err = export(capsys, "--homework", hw, "--storage", url, "--with-adapters", "--base-model", "embedded")
    assert code == 2 and "--base-model names 'embedded'" in err
    assert snapshot(hw) == before
    # Naming the study's base model says the homework uses it: the copy goes ahead.
    assert export(capsys, "--homework", hw, "--storage", url, "--with-adapters", "--base-model", "tiny")[0] == 0


@pytest.mark.fast
def test_with_adapters_refuses_a_pair_whose_folders_are_gone(capsys, hw, storage):
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep", "--with-adapters")
    assert code == 2 and "The SFT adapter of this pair is not on disk" in err
    assert snapshot(hw) == before


def test_with_adapters_reads_a_fresh_trees_base_model_from_its_checkpoint_line(capsys, hw, adapter_storage):
    """A fresh course tree has no adapter yet, but its base_llm.py names SmolLM2-360M: a `tiny` study's adapters
    would not work there, so the copy is refused, read the way homework mode reads the checkpoint line."""
    url, _ = adapter_storage
    (hw / "homework" / "base_llm.py").write_text(
        'from transformers import AutoModelForCausalLM\n\ncheckpoint = "HuggingFaceTB/SmolLM2-360M-Instruct"\n')
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", url, "--with-adapters")
    assert code == 2, err
    assert "trained on 'tiny' but homework/base_llm.py:checkpoint names 'HuggingFaceTB/SmolLM2-360M-Instruct'" in err
    assert snapshot(hw) == before
    assert export(capsys, "--homework", hw, "--storage", url, "--with-adapters", "--base-model", "tiny")[0] == 0


def test_a_rank_file_linked_out_of_the_tree_is_refused_and_nothing_is_written(capsys, hw, storage, tmp_path):
    """Export writes only inside DIR (README): a rank file that links outside it is refused with one sentence."""
    outside = tmp_path / "elsewhere.py"
    outside.write_bytes(RFT)
    (hw / "homework" / "rft.py").unlink()
    (hw / "homework" / "rft.py").symlink_to(outside)
    before = snapshot(hw)
    code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
    assert code == 2 and err.count("\n") == 1, err
    assert "'homework/rft.py' is a symbolic link (or lies under one) that leads outside the homework folder" in err
    assert snapshot(hw) == before and outside.read_bytes() == RFT


def test_an_immutable_rank_file_gets_advice_that_works(capsys, hw, storage):
    """`chattr +i` forbids writes whatever the mode says (root included): chmod u+w would not help, so the
    sentence says what does."""
    import shutil
    import subprocess

    rft = hw / "homework" / "rft.py"
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", rft], capture_output=True).returncode:
        pytest.skip("this file system or user cannot set the immutable attribute")
    try:
        before = snapshot(hw)
        code, _, err = export(capsys, "--homework", hw, "--storage", storage, "--study", "sweep")
        assert code == 2 and err.count("\n") == 1, err
        assert "homework/rft.py is read-only, so nothing was written; it is marked immutable or append-only" in err
        assert f"chattr -i -a {rft}" in err and "chmod u+w" not in err
        assert snapshot(hw) == before
    finally:
        subprocess.run(["chattr", "-i", rft], check=True)
