"""Adapters derived from one training (shrunk with peft's conversion, or nested prefixes) on the tiny model:
plain PEFT folders, sized to the byte before they exist, computing what they claim to compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file

from sweep.sizing import adapter_size, config_for
from trainers.errors import RanksweepError
from trainers.nested import prefix_adapter, sampled_prefixes, train_nested
from trainers.shrink import attached_adapter, convert, shrink_adapter, write_shrunk
from trainers.training import TrainConfig, sft_examples, train_adapter
from trainers.unitgen import generate_questions

R = 8


@pytest.fixture(scope="module")
def examples():
    return sft_examples(generate_questions(24, seed=3))


@pytest.fixture(scope="module")
def tiny_config():
    return config_for("tiny")


@pytest.fixture(scope="module")
def parent(tiny, examples, tmp_path_factory):
    """A rank-8 SFT adapter trained on the tiny model (lr high enough that B moves well away from zero)."""
    out = tmp_path_factory.mktemp("parent") / "r8"
    config = TrainConfig(kind="sft", rank=R, lr=2e-2, epochs=2, batch_size=8, seed=1)
    train_adapter(tiny, examples, config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def nested_parent(tiny, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("nested") / "r8"
    config = TrainConfig(kind="sft", rank=R, lr=2e-2, epochs=2, batch_size=8, seed=1, adapter_dtype="fp16")
    train_nested(tiny, examples, config, out, ranks=(1, 2, 4), progress=False)
    return out


def _probe(tiny):
    batch = tiny.tokenizer(["Convert 46 liters to milliliters.", "How many grams are in 3 kg?"], return_tensors="pt",
                           padding=True)
    return batch


def _logits(tiny, adapter_dir, mask_rank: int | None = None, full_rank: int = R):
    """Logits of the tiny model with an adapter folder loaded (optionally only its first mask_rank components)."""
    batch = _probe(tiny)
    with attached_adapter(tiny, adapter_dir) as peft_model, torch.no_grad():
        if mask_rank is None:
            return peft_model(**batch).logits
        with sampled_prefixes(peft_model, (mask_rank,), full_rank, seed=0):
            return peft_model(**batch).logits


def _plain_load(tiny, adapter_dir) -> LoraConfig:
    """Load with nothing but peft, on a fresh copy of the base model; return the loaded config."""
    import copy

    model = copy.deepcopy(tiny.model)
    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    return peft_model.peft_config["default"]


def _file_bytes(adapter_dir) -> int:
    return (adapter_dir / "adapter_model.safetensors").stat().st_size


def test_shrink_to_full_rank_computes_the_parent(tiny, parent, tmp_path):
    out = shrink_adapter(tiny, parent, R, tmp_path / "r8")
    assert torch.allclose(_logits(tiny, out.adapter_dir), _logits(tiny, parent), atol=1e-4)
    # The project's convention survives: lora_alpha = alpha_ratio * rank, as the parent was trained.
    config = _plain_load(tiny, out.adapter_dir)
    assert config.r == R and config.lora_alpha == pytest.approx(4.0 * R)


@pytest.mark.parametrize("rank", [1, 2])
def test_shrunk_adapter_is_the_best_low_rank_update_and_sized_exactly(tiny, tiny_config, parent, tmp_path, rank):
    predicted = adapter_size(tiny_config, rank, "fp32")
    out = shrink_adapter(tiny, parent, rank, tmp_path / f"r{rank}")
    assert _file_bytes(out.adapter_dir) == predicted.raw_bytes == out.raw_bytes
    config = _plain_load(tiny, out.adapter_dir)
    assert config.r == rank and not config.rank_pattern
    # Each module's update is the parent's update cut to `rank` singular values (checked against torch's SVD).
    parent_w, child_w = load_file(parent / "adapter_model.safetensors"), load_file(out.adapter_dir / "adapter_model.safetensors")
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = parent_w[f"{name}.lora_B.weight"] @ parent_w[f"{name}.lora_A.weight"] * 4.0
    u, s, v = torch.linalg.svd(delta)
    best = u[:, :rank] @ torch.diag(s[:rank]) @ v[:rank]
    child = child_w[f"{name}.lora_B.weight"] @ child_w[f"{name}.lora_A.weight"] * 4.0
    assert torch.allclose(child, best, atol=1e-5)
    assert (delta - child).norm() > 0.01 * delta.norm()  # a real cut, not a copy


def test_recovery_trains_from_the_shrunk_weights(tiny, tiny_config, parent, examples, tmp_path):
    shrunk = convert(tiny, parent, 2)
    plain = write_shrunk(tiny, shrunk, parent, tmp_path / "r2-0")
    recovered = write_shrunk(tiny, shrunk, parent, tmp_path / "r2-3", recover_steps=3, examples=examples)
    assert recovered.recover_steps == 3 and len(recovered.losses) == 3
    assert _file_bytes(recovered.adapter_dir) == adapter_size(tiny_config, 2).raw_bytes
    notes = json.loads((recovered.adapter_dir / "ranksweep.json").read_text())
    assert notes["origin"] == "shrink" and notes["recover_steps"] == 3 and notes["steps"] == 3
    assert notes["parent_rank"] == R and notes["rank"] == 2
    before = load_file(plain.adapter_dir / "adapter_model.safetensors")
    after = load_file(recovered.adapter_dir / "adapter_model.safetensors")
    b_keys = [k for k in before if ".lora_B." in k]
    moved = sum((after[k] - before[k]).norm() ** 2 for k in b_keys) ** 0.5
    size = sum(before[k].norm() ** 2 for k in b_keys) ** 0.5
    # Three Adam steps from the shrunk weights move B by about 1.2 here, well under its size of about 2.4;
    # a run that ignored them would start at B = 0 and end farther than `size` from them.
    assert 0 < moved < 0.7 * size
    _plain_load(tiny, recovered.adapter_dir)


def test_energy_threshold_gives_a_rank_pattern_sized_exactly(tiny, tiny_config, parent, tmp_path):
    shrunk = convert(tiny, parent, 0.6)
    assert shrunk.rank_pattern and len(set(shrunk.rank_pattern.values())) > 1
    config = shrunk.lora_config
    predicted = adapter_size(tiny_config, config.r, "fp32", rank_pattern=config.rank_pattern,
                             alpha_pattern=config.alpha_pattern)
    uniform = adapter_size(tiny_config, max(shrunk.rank_pattern.values()), "fp32")
    assert predicted.raw_bytes < uniform.raw_bytes
    out = write_shrunk(tiny, shrunk, parent, tmp_path / "e60")
    assert _file_bytes(out.adapter_dir) == predicted.raw_bytes
    loaded = _plain_load(tiny, out.adapter_dir)
    assert loaded.rank_pattern == shrunk.rank_pattern
    with pytest.raises(RanksweepError, match="whole rank"):
        write_shrunk(tiny, shrunk, parent, tmp_path / "e60-r", recover_steps=2, examples=[])


@pytest.mark.parametrize("rank", [1, 2, 4, R])
def test_nested_prefix_is_a_plain_adapter_computing_its_prefix(tiny, tiny_config, nested_parent, tmp_path, rank):
    out = prefix_adapter(tiny, nested_parent, rank, tmp_path / f"p{rank}")
    predicted = adapter_size(tiny_config, rank, "fp16")
    assert _file_bytes(out.adapter_dir) == predicted.raw_bytes == out.raw_bytes
    config = _plain_load(tiny, out.adapter_dir)
    # alpha stays the rank-8 adapter's, so the scaling is alpha/rank, as the prefix was trained.
    assert config.r == rank and config.lora_alpha == pytest.approx(4.0 * R)
    assert torch.allclose(_logits(tiny, out.adapter_dir), _logits(tiny, nested_parent, mask_rank=rank), atol=1e-4)


def test_nested_training_draws_every_listed_prefix(tiny, examples, tmp_path):
    draws: list[int] = []
    config = TrainConfig(kind="sft", rank=4, epochs=2, batch_size=4, seed=0)
    train_adapter(tiny, examples, config, tmp_path / "n", progress=False,
                  during=lambda pm: sampled_prefixes(pm, (1, 2, 4), 4, seed=0, draws=draws))
    assert len(draws) == 12 and set(draws) == {1, 2, 4}


def test_nested_prefixes_differ_from_truncating_a_plain_adapter(tiny, nested_parent, parent, tmp_path):
    # A rank-1 prefix is a working adapter in its own right: its update is not zero, and not the parent's.
    one = prefix_adapter(tiny, nested_parent, 1, tmp_path / "p1")
    base = _logits_without_adapter(tiny)
    assert (_logits(tiny, one.adapter_dir) - base).abs().max() > 1e-3
    with pytest.raises(RanksweepError, match="not among the prefixes"):
        prefix_adapter(tiny, nested_parent, 3, tmp_path / "p3")
    with pytest.raises(RanksweepError, match="not among the prefixes"):
        prefix_adapter(tiny, parent, 2, tmp_path / "plain-p2")


def _logits_without_adapter(tiny):
    with torch.no_grad():
        return tiny.model(**_probe(tiny)).logits


# --- studies: `launch --strategy` on tiny ---------------------------------------------------------------------


def _study_args(root, study: str, strategy: str, *extra, artifacts: str | None = None) -> list[str]:
    """A 4-trial tiny study. Each study has its own artifact folder (`artifacts` names another study's to share
    it): in a shared one, the adapters an earlier test trained would be cache hits, and the training counts
    these tests assert would depend on the order the tests ran in."""
    return [
        "launch", "--study", study, "--storage", f"sqlite:///{root}/studies.db", "--base-model", "tiny",
        "--device", "cpu", "--preset", "quick", "--sft-ranks", "2,4,8", "--rft-ranks", "2,8",
        "--budget-mb", "1", "--trials", "4", "--train-data", root / "train.json", "--valid-data",
        root / "valid.json", "--rft-data", root / "rft.json", "--max-examples", "16", "--questions", "4",
        "--artifacts", root / "artifacts" / (artifacts or study), "--no-progress", "--strategy", strategy, *extra,
    ]


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    from small_data import write_small_data

    return write_small_data(tmp_path_factory.mktemp("strategy-study"))


def _records(root, study: str):
    import optuna

    from sweep.records import TrialResult

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{root}/studies.db")
    done = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [TrialResult.from_trial(t) for t in done]


def _status(ranksweep, root, study: str) -> tuple[dict, str]:
    """`status --json`'s training counts and the plain status's summary line."""
    storage = f"sqlite:///{root}/studies.db"
    counts = json.loads(ranksweep("status", "--study", study, "--storage", storage, "--json").stdout)["trainings"]
    text = ranksweep("status", "--study", study, "--storage", storage).stdout
    line = next(line for line in text.splitlines() if line.startswith("trainings run:"))
    return counts, line


@pytest.mark.parametrize("strategy,extra", [("shrink", ("--recover-steps", "2")), ("nested", ())])
def test_study_derives_every_rank_from_one_training_per_kind(ranksweep, tiny, tiny_config, study_root, strategy,
                                                             extra):
    study = f"one-{strategy}"
    result = ranksweep(*_study_args(study_root, study, strategy, *extra))
    assert result.returncode == 0, result.stderr
    records = _records(study_root, study)
    assert len(records) == 4
    parents = {"sft": set(), "rft": set()}
    for record in records:
        for adapter in record.adapters():
            top = 8  # the largest rank of both kinds' spaces: the one training per kind
            assert adapter.raw_bytes == adapter.raw_bytes_predicted  # sized exactly, derived or not
            # ... by sweep/sizing.py from the model's config alone, and the file in the cache is that size.
            assert adapter.raw_bytes == adapter_size(tiny_config, adapter.rank, adapter.dtype).raw_bytes
            assert _file_bytes(Path(adapter.dir)) == adapter.raw_bytes
            loaded_config = _plain_load(tiny, Path(adapter.dir))  # peft alone loads what the study made
            assert loaded_config.r == adapter.rank and not loaded_config.rank_pattern
            if strategy == "shrink" and adapter.rank == top:
                assert adapter.origin == "trained"  # the parent itself, graded as trained
                continue
            assert adapter.origin == strategy and adapter.parent_key
            parents[adapter.kind].add(adapter.parent_key)
            notes = json.loads((Path(adapter.dir) / "ranksweep.json").read_text())
            assert notes["origin"] == strategy and notes["parent_key"] == adapter.parent_key
            assert notes["recover_steps"] == (2 if strategy == "shrink" else 0)
            config = json.loads((Path(adapter.dir) / "adapter_config.json").read_text())
            assert config["r"] == adapter.rank
            assert config["lora_alpha"] == pytest.approx(adapter.alpha)
    assert all(len(keys) <= 1 for keys in parents.values())  # one parent per kind (one setting in this space)
    counts, line = _status(ranksweep, study_root, study)
    derived = {kind: sum(1 for r in records for a in r.adapters()
                         if a.kind == kind and a.origin != "trained" and not a.cache_hit) for kind in ("sft", "rft")}
    assert counts["sft"] + counts["rft"] == 2  # one training per kind, however many ranks the trials asked for
    assert (counts["derived_sft"], counts["derived_rft"]) == (derived["sft"], derived["rft"])
    assert derived["sft"] + derived["rft"] > 0
    assert line.startswith(f"trainings run: {counts['sft']} SFT + {counts['rft']} RFT; adapters derived from them: "
                           f"{derived['sft']} SFT + {derived['rft']} RFT")


def test_independent_study_trains_each_adapter_and_derives_none(ranksweep, study_root):
    study = "one-independent"
    assert ranksweep(*_study_args(study_root, study, "independent")).returncode == 0
    records = _records(study_root, study)
    assert len(records) == 4
    adapters = [a for r in records for a in r.adapters()]
    assert all(a.origin == "trained" and not a.parent_key for a in adapters)
    trained = {kind: len({a.key for a in adapters if a.kind == kind and not a.cache_hit}) for kind in ("sft", "rft")}
    counts, line = _status(ranksweep, study_root, study)
    assert (counts["sft"], counts["rft"]) == (trained["sft"], trained["rft"])
    assert counts["derived_sft"] == counts["derived_rft"] == 0 and "derived" not in line
    # Four trials of a 3x2 space ask for more ranks than one per kind: independent pays a training for each.
    assert counts["sft"] + counts["rft"] > 2


def test_derived_adapters_are_cached_under_their_parent(ranksweep, study_root):
    # A second shrink study over the same space reuses the first one's parents and derived adapters.
    first_study = _study_args(study_root, "one-shrink", "shrink", "--recover-steps", "2")
    assert ranksweep(*first_study).returncode == 0  # made here when this test runs first; else a finished resume
    args = _study_args(study_root, "one-shrink-again", "shrink", "--recover-steps", "2", artifacts="one-shrink")
    assert ranksweep(*args).returncode == 0
    first = {a.key for r in _records(study_root, "one-shrink") for a in r.adapters()}
    again = [a for r in _records(study_root, "one-shrink-again") for a in r.adapters()]
    assert all(a.cache_hit and a.train_seconds == 0 for a in again if a.key in first)
    # Other recovery steps are other adapters: same parent, new keys.
    other = _study_args(study_root, "one-shrink-0", "shrink", "--recover-steps", "0", artifacts="one-shrink")
    assert ranksweep(*other).returncode == 0
    zero = [a for r in _records(study_root, "one-shrink-0") for a in r.adapters() if a.origin == "shrink"]
    assert zero and all(a.key not in first and a.train_seconds == 0 for a in zero)


@pytest.mark.fast
def test_recover_steps_need_shrink(ranksweep, study_root):
    result = ranksweep(*_study_args(study_root, "bad", "nested", "--recover-steps", "3"))
    assert result.returncode == 2 and "--strategy shrink" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.fast
def test_auto_takes_shrink_with_recovery_only_where_it_is_cheaper():
    from sweep.strategies import CUT_STEPS, DEFAULT_RECOVER_STEPS, resolve_strategy

    # Shrink costs T + (25 + the cut, 6 steps' time) per other rank, independent T per rank: cheaper exactly
    # when T > 31 steps. 63 steps is the benchmark's training (1,000 rows, batch 16).
    assert CUT_STEPS == 6
    assert resolve_strategy("auto", None, 63) == ("shrink", DEFAULT_RECOVER_STEPS) == ("shrink", 25)
    assert resolve_strategy("auto", None, 32) == ("shrink", 25)
    assert resolve_strategy("auto", None, 31) == ("independent", 0)
    assert resolve_strategy("auto", None, 25) == ("independent", 0)
    assert resolve_strategy("auto", 5, 12) == ("shrink", 5)
    assert resolve_strategy("auto", 5, 11) == ("independent", 0)
    assert resolve_strategy("shrink", None, 1) == ("shrink", 25)
    assert resolve_strategy("shrink", 0, 100) == ("shrink", 0)
    assert resolve_strategy("nested", None, 100) == ("nested", 0)


def test_auto_study_of_short_trainings_stays_independent(ranksweep, study_root):
    import optuna

    args = _study_args(study_root, "auto-short", "auto")
    args[args.index("--trials") + 1] = "1"
    assert ranksweep(*args).returncode == 0
    study = optuna.load_study(study_name="auto-short", storage=f"sqlite:///{study_root}/studies.db")
    config = study.user_attrs["config"]
    assert (config["strategy"], config["recover_steps"]) == ("independent", 0)  # 16 rows: 1 step per training


def test_auto_weighs_the_rft_training_too(ranksweep, study_root, tmp_path):
    """600 SFT rows make 38-step trainings (shrink would pay), but 16 RFT rows make 1-step ones: deriving an
    RFT rank with 25 recovery steps would cost 25x its training, so the study stays independent."""
    import optuna

    from trainers.data import write_qa
    from trainers.unitgen import generate_questions

    write_qa(tmp_path / "train.json", generate_questions(600, 5, level="metric-prefix"))
    args = _study_args(study_root, "auto-rft-short", "auto")
    args[args.index("--trials") + 1] = "1"
    args[args.index("--train-data") + 1] = tmp_path / "train.json"
    args[args.index("--max-examples") + 1] = "600"
    assert ranksweep(*args).returncode == 0
    study = optuna.load_study(study_name="auto-rft-short", storage=f"sqlite:///{study_root}/studies.db")
    assert study.user_attrs["config"]["strategy"] == "independent"
