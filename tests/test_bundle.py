"""The submission zip: which files the homework rules keep, and its exact size."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from sweep.bundle import (ADAPTER_FILES, ZIP_END_RECORD, bundle_members, combined_bytes, rest_bytes,
                          submission_bytes, write_zip, zip_bytes)
from trainers.errors import RanksweepError

pytestmark = pytest.mark.fast  # no test here builds a model

KEPT = [
    "homework/__init__.py",
    "homework/base_llm.py",
    "homework/data.py",
    "homework/rft.py",
    "homework/rft_model/adapter_config.json",
    "homework/rft_model/adapter_model.safetensors",
    "homework/sft.py",
    "homework/sft_model/adapter_config.json",
    "homework/sft_model/adapter_model.safetensors",
    "homework/sft_model/tokenizer.json",
]
LEFT_OUT = [
    "homework/__pycache__/sft.cpython-311.pyc",
    "homework/old.pyc",
    "homework/README.md",
    "homework/sft_model/README.md",
    "homework/sft_model/checkpoint-10/adapter_model.safetensors",
    "homework/sft_model/checkpoint-10/trainer_state.json",
    "homework/sft_model/events.out.tfevents.1700000000.host.1.0",
    "homework/sft_model/optimizer.pt",
    "homework/sft_model/scheduler.pt",
    "homework/sft_model/rng_state.pth",
    "homework/sft_model/rng_state_0.pth",
    "homework/sft_model/training_args.bin",
    "homework/sft_model/trainer_state.json",
    "homework/sft_model/training_log.csv",
    "homework/sft_model/ranksweep.json",
    "homework/runs/events.out.tfevents.1700000001.host.2.0",
]
OUTSIDE = ["data/train.json", "README.md", "bundle.zip"]


def _write(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Half text (compressible), half random bytes, so deflate sizes are not trivial.
    text = (f"line {seed}\n" * size)[: size // 2].encode()
    path.write_bytes(text + os.urandom(size - len(text)))


@pytest.fixture
def homework(tmp_path: Path) -> Path:
    for index, name in enumerate(KEPT + LEFT_OUT + OUTSIDE):
        _write(tmp_path / name, 3000 + 100 * index, index)
    return tmp_path


def _adapter_dir(folder: Path, size: int) -> Path:
    _write(folder / "adapter_model.safetensors", size, 7)
    _write(folder / "adapter_config.json", 900, 8)
    _write(folder / "training_log.csv", 5000, 9)  # our trainer's notes: never part of the submission
    _write(folder / "ranksweep.json", 400, 10)
    return folder


def _zipfile_size(tmp_path: Path, members) -> int:
    path = tmp_path / "reference.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, source in members:
            archive.write(source, arcname)
    return path.stat().st_size


def test_members_follow_the_homework_rules(homework: Path):
    members = bundle_members(homework)
    assert [arcname for arcname, _ in members] == sorted(KEPT)
    assert all(source == homework / arcname for arcname, source in members)


def test_zip_bytes_is_the_size_zipfile_writes(homework: Path, tmp_path: Path):
    members = bundle_members(homework)
    expected = _zipfile_size(tmp_path, members)
    assert zip_bytes(members) == expected
    assert submission_bytes(homework) == expected
    written = write_zip(members, tmp_path / "out" / "homework.zip")
    assert written == expected == (tmp_path / "out" / "homework.zip").stat().st_size
    with zipfile.ZipFile(tmp_path / "out" / "homework.zip") as archive:
        assert sorted(archive.namelist()) == sorted(KEPT)
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())


def test_rest_bytes_leaves_out_both_adapter_folders(homework: Path, tmp_path: Path):
    rest = [m for m in bundle_members(homework) if "_model/" not in m[0]]
    assert [a for a, _ in rest] == ["homework/__init__.py", "homework/base_llm.py", "homework/data.py",
                                    "homework/rft.py", "homework/sft.py"]
    assert rest_bytes(homework) == _zipfile_size(tmp_path, rest)


def test_adapter_folders_replace_those_in_the_tree(homework: Path, tmp_path: Path):
    sft = _adapter_dir(tmp_path / "trial" / "sft", 20_000)
    rft = _adapter_dir(tmp_path / "trial" / "rft", 40_000)
    members = bundle_members(homework, adapters={"homework/sft_model": sft, "homework/rft_model": rft})
    names = [arcname for arcname, _ in members]
    assert names == sorted([m for m in KEPT if "_model/" not in m] + [
        "homework/rft_model/adapter_config.json",
        "homework/rft_model/adapter_model.safetensors",
        "homework/sft_model/adapter_config.json",
        "homework/sft_model/adapter_model.safetensors",
    ])
    assert dict(members)["homework/sft_model/adapter_model.safetensors"] == sft / "adapter_model.safetensors"
    assert "homework/sft_model/tokenizer.json" not in names  # the whole folder is replaced
    expected = _zipfile_size(tmp_path, members)
    assert submission_bytes(homework, sft_dir=sft, rft_dir=rft) == expected
    # The trial's adapter files hold 30,900 random (incompressible) bytes on top of the rest of the tree.
    assert expected > rest_bytes(homework) + 30_900


def test_adapters_alone_without_a_tree(tmp_path: Path):
    sft = _adapter_dir(tmp_path / "sft", 10_000)
    rft = _adapter_dir(tmp_path / "rft", 10_000)
    members = bundle_members(None, adapters={"homework/sft_model": sft, "homework/rft_model": rft})
    expected = [f"homework/{folder}/{name}" for folder in ("rft_model", "sft_model") for name in sorted(ADAPTER_FILES)]
    assert [arcname for arcname, _ in members] == expected
    assert submission_bytes(None, sft_dir=sft, rft_dir=rft) == _zipfile_size(tmp_path, members)


@pytest.mark.parametrize("sizes", [(20_000, 40_000), (1, 300_000), (0, 0)])
def test_combined_bytes_equals_zipping_the_whole_submission(homework: Path, tmp_path: Path, sizes):
    # What each trial records as its measured size: the rest and each adapter zipped apart, then added.
    sft = _adapter_dir(tmp_path / "trial" / "sft", sizes[0])
    rft = _adapter_dir(tmp_path / "trial" / "rft", sizes[1])
    sft_zip, rft_zip = submission_bytes(None, sft_dir=sft), submission_bytes(None, rft_dir=rft)
    whole = submission_bytes(homework, sft_dir=sft, rft_dir=rft)
    assert combined_bytes(rest_bytes(homework), sft_zip, rft_zip) == whole
    assert combined_bytes(0, sft_zip, rft_zip) == submission_bytes(None, sft_dir=sft, rft_dir=rft)
    assert combined_bytes(0, sft_zip, 0) == sft_zip
    assert combined_bytes(0, 0, 0) == ZIP_END_RECORD  # an empty zip
    with pytest.raises(ValueError):
        combined_bytes(5, sft_zip)


def test_user_errors_are_one_sentence(tmp_path: Path):
    with pytest.raises(RanksweepError, match="no homework/ folder"):
        bundle_members(tmp_path)
    with pytest.raises(RanksweepError, match="no homework/ folder"):
        rest_bytes(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RanksweepError, match="lacks adapter_model.safetensors, adapter_config.json"):
        submission_bytes(None, sft_dir=tmp_path / "empty")
    with pytest.raises(RanksweepError, match="Nothing to measure"):
        submission_bytes(None)
