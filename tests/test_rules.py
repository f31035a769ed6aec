"""The rules that have one home each (docs/design.md, "Layout and dependencies"): each test pins a rule through
the one function every caller uses, so a second copy drifting from it has nothing to agree with."""

from __future__ import annotations

import json

import pytest

from sweep.cache import HASHED_FILES, Manifest
from sweep.settings import StudyConfig
from sweep.sizing import DTYPES, fits, mib
from trainers.grading import accuracy_for_points, point_marks, points
from trainers.training import ADAPTER_DTYPES, MAX_RANK, is_rank

pytestmark = pytest.mark.fast  # no test here builds a model


def test_points_rule_and_its_inverse_agree():
    assert points("sft", 0.4) == 0 and points("sft", 0.5) == pytest.approx(12.5)
    assert points("sft", 0.6) == pytest.approx(25) and points("sft", 0.9) == 25
    assert points("rft", 0.65) == pytest.approx(12.5) and points("rft", 0.75) == pytest.approx(27.5)
    assert points("rft", 0.9) == 30
    for kind, accuracy in (("sft", 0.47), ("rft", 0.63)):
        assert accuracy_for_points(kind, points(kind, accuracy)) == pytest.approx(accuracy)
    # At 0 or full points the rule only bounds the accuracy: the bound is read back.
    assert (accuracy_for_points("sft", 0), accuracy_for_points("sft", 25)) == (0.4, pytest.approx(0.6))
    assert [(round(100 * a), p) for a, p in point_marks("rft")] == [(60, 0), (70, 25), (80, 30)]


def test_fits_is_inclusive_and_mib_is_the_homeworks_mb():
    assert fits(100, 100) and not fits(101, 100)
    assert mib(52_428_800) == 50.0


def test_one_rank_bound():
    assert is_rank(1) and is_rank(MAX_RANK)
    assert not any(is_rank(v) for v in (0, MAX_RANK + 1, True, 2.0, "4"))


def test_study_config_round_trips_and_keeps_unknown_keys():
    stored = {"base_model": "tiny", "budget_bytes": 1000, "sft_ranks": [1, 2], "trials": 3,
              "homework_rest_bytes": 0, "written_by_a_newer_version": {"x": 1}}
    config = StudyConfig.from_attrs(stored)
    assert config.budget_bytes == 1000 and config.sft_ranks == [1, 2] and config.level is None
    assert config.extra == {"written_by_a_newer_version": {"x": 1}}
    again = StudyConfig.from_attrs(json.loads(json.dumps(config.to_attrs())))
    assert again == config


def test_manifest_keeps_its_file_layout():
    raw = {**{name: f"sha-{name}" for name in HASHED_FILES}, "zip_bytes": 12, "spec": {"rank": 4}, "key": "k"}
    manifest = Manifest.from_json(raw)
    assert manifest.zip_bytes == 12 and manifest.train_seconds is None
    assert manifest.to_json() == raw


def test_every_adapter_dtype_has_a_size():
    assert tuple(DTYPES) == ADAPTER_DTYPES  # the size table covers exactly the dtypes training saves
