"""The LoRA trainer on real models and real files: what it trains, what it saves, what it leaves alone."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import struct

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from trainers.batching import IGNORE, collate, schedule, steps_for, tokenize_rows
from trainers.data import QA, RFTRow
from trainers.errors import RanksweepError
from trainers.training import (
    TrainConfig,
    TrainExample,
    batch_loss,
    format_answer,
    rft_examples,
    sft_examples,
    train_adapter,
)
from trainers.unitgen import generate_questions

TINY_PARAMS_PER_RANK = 2048  # 2 layers x (q 64+64, k 64+32, v 64+32, o 64+64, gate/up 64+128, down 128+64)


def _fingerprint(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _header(path) -> dict:
    """The safetensors JSON header: tensor names, dtypes and shapes."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length])


def _data_bytes(path) -> int:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return path.stat().st_size - 8 - length


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


@pytest.fixture(scope="module")
def repeated():
    """Two questions eight times each: a set the tiny model can fit a little."""
    return sft_examples(generate_questions(2, seed=0)) * 8


@pytest.mark.fast
def test_format_answer_rounds_to_three_decimals_without_trailing_zeros():
    assert format_answer(6000.0) == "<answer>6000</answer>"
    assert format_answer(0.5) == "<answer>0.5</answer>"
    assert format_answer(0.147868) == "<answer>0.148</answer>"
    assert format_answer(33378600.0) == "<answer>33378600</answer>"
    assert format_answer(2.0004) == "<answer>2</answer>"
    assert format_answer(-0.0001) == "<answer>0</answer>"
    assert format_answer(-1.25) == "<answer>-1.25</answer>"


@pytest.mark.fast
def test_sft_and_rft_examples_pair_question_with_its_target():
    assert sft_examples([QA("How many gram are there per 6 kg?", 6000.0)]) == [
        TrainExample("How many gram are there per 6 kg?", "<answer>6000</answer>")
    ]
    chain = "1 kg = 1000 g, so 6 kg = 6000 g. <answer>6000</answer>"
    assert rft_examples([RFTRow("How many gram are there per 6 kg?", 6000.0, chain)]) == [
        TrainExample("How many gram are there per 6 kg?", chain)
    ]


def test_only_the_completion_and_eos_are_labelled(tiny):
    tokenizer = tiny.tokenizer
    pairs = [
        ("How many gram are there per 6 kg?", "<answer>6000</answer>"),
        ("Convert 2 h to s.", "<answer>7200</answer>"),
    ]
    rows, dropped = tokenize_rows(tokenizer, pairs, max_length=256)
    assert dropped == 0
    batch = collate(rows, tokenizer.pad_token_id)
    assert batch.input_ids.shape[1] == max(len(r.ids) for r in rows)  # padded to the longest row only
    for i, (prompt, completion) in enumerate(pairs):
        prompt_ids = tokenizer(prompt)["input_ids"]
        completion_ids = tokenizer(" " + completion, add_special_tokens=False)["input_ids"]
        assert rows[i].ids == (*prompt_ids, *completion_ids, tokenizer.eos_token_id)
        labels = batch.labels[i]
        assert int((labels != IGNORE).sum()) == len(completion_ids) + 1
        assert (labels[: len(prompt_ids)] == IGNORE).all()
        assert labels[len(prompt_ids) + len(completion_ids)] == tokenizer.eos_token_id
        assert int(batch.attention_mask[i].sum()) == len(rows[i].ids)


def test_rows_over_max_length_are_dropped(tiny):
    pairs = [("Convert 2 h to s.", "<answer>7200</answer>"), ("Convert 2 h to s.", "x " * 40)]
    rows, dropped = tokenize_rows(tiny.tokenizer, pairs, max_length=30)
    assert dropped == 1 and len(rows) == 1


def test_loss_on_labelled_positions_equals_the_full_logits_loss(tiny, repeated):
    rows, _ = tokenize_rows(tiny.tokenizer, [(e.prompt, e.completion) for e in repeated[:6]], 256)
    batch = collate(rows, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        fast = batch_loss(tiny.model, batch).item()
        full = batch_loss(tiny.model, batch, labelled_only=False).item()
    assert fast == pytest.approx(full, rel=1e-5)
    assert fast == pytest.approx(math.log(len(tiny.tokenizer)), abs=0.1)  # random weights: near uniform


@pytest.mark.fast
def test_schedule_visits_every_row_once_per_epoch_and_is_seeded():
    lengths = [10 + (i * 7) % 23 for i in range(37)]
    assert steps_for(37, 8, 1.0) == 5 and steps_for(37, 8, 0.5) == 3 and steps_for(37, 8, 2.0) == 10
    plan = schedule(lengths, 8, steps=5, seed=3)
    assert sorted(i for batch in plan for i in batch) == list(range(37))
    assert plan == schedule(lengths, 8, steps=5, seed=3)
    assert plan != schedule(lengths, 8, steps=5, seed=4)
    two_epochs = schedule(lengths, 8, steps=10, seed=3)
    assert two_epochs[:5] == plan and sorted(i for b in two_epochs[5:] for i in b) == list(range(37))
    # Rows are batched with rows of similar length: no batch mixes the shortest and the longest.
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < 22 for b in plan)


# Both forward-pass paths: float32, and bf16 autocast (the default on CPUs with avx512_bf16).
@pytest.mark.parametrize("bf16", ["0", "1"], ids=["fp32", "bf16"])
def test_training_lowers_the_loss_saves_a_peft_folder_and_leaves_the_base_alone(tiny, repeated, tmp_path, monkeypatch, bf16):
    monkeypatch.setenv("RANKSWEEP_CPU_BF16", bf16)
    model = tiny.model
    before = _fingerprint(model)
    config = dict(model.config.to_dict())
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    # lr 5e-2: under bf16 autocast the random tiny model's loss is noisy enough that 2e-2 moves it < 0.3 in 10 steps.
    config_run = TrainConfig("sft", rank=8, lr=5e-2, dropout=0.0, epochs=5, batch_size=8)
    out = tmp_path / "adapters" / "sft"
    result = train_adapter(tiny, repeated, config_run, out, progress=False, metadata={"trial": 7})

    assert (result.steps, result.examples, len(result.losses)) == (10, 16, 10)
    assert result.losses[0] == pytest.approx(math.log(len(tiny.tokenizer)), abs=0.1)
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.4
    assert result.trainable_params == 8 * TINY_PARAMS_PER_RANK
    assert result.adapter_dir == out

    # The base model is handed back exactly as lent.
    assert _fingerprint(model) == before
    assert not any("lora_" in name for name, _ in model.named_modules())
    assert not model.training and not hasattr(model, "peft_config")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert model.config.to_dict() == config

    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "training_log.csv", "ranksweep.json"} <= files
    assert [p.name for p in out.parent.iterdir()] == ["sft"]  # no temporary folder left beside it
    assert result.raw_bytes == (out / "adapter_model.safetensors").stat().st_size
    assert _data_bytes(out / "adapter_model.safetensors") == 4 * result.trainable_params

    notes = json.loads((out / "ranksweep.json").read_text())
    assert notes["kind"] == "sft" and notes["rank"] == 8 and notes["alpha"] == 32.0
    assert notes["base_model"] == "tiny" and notes["adapter_dtype"] == "fp32" and notes["trial"] == 7
    assert (notes["steps"], notes["examples"], notes["raw_bytes"]) == (10, 16, result.raw_bytes)
    assert notes["final_loss"] == result.losses[-1]
    with open(out / "training_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [int(r["step"]) for r in log] == list(range(1, 11))
    assert [float(r["loss"]) for r in log] == pytest.approx(result.losses, abs=1e-6)
    assert float(log[0]["lr"]) < float(log[1]["lr"]) and float(log[-1]["lr"]) < float(log[1]["lr"])

    saved = load_file(out / "adapter_model.safetensors")
    peft_model = PeftModel.from_pretrained(model, out)
    try:
        # PEFT names the live parameters after the adapter ("default"); the file leaves that name out.
        loaded = {name.replace(".default", ""): t for name, t in _lora_state(peft_model).items()}
        assert len(saved) == 2 * 7 * 2  # lora_A and lora_B for 7 projections in 2 layers
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[name], saved[name]) for name in saved)
        assert any(t.abs().sum() > 0 for name, t in saved.items() if "lora_B" in name)  # B moved off its zero init
    finally:
        peft_model.unload()
        # Loading for inference froze the shared tiny model and left peft_config on it: hand it back as lent,
        # or a later test that trains a copy of it (test_rft_data's zero_answerer) has nothing to train.
        for name, param in model.named_parameters():
            param.requires_grad_(grads[name])
        if hasattr(model, "peft_config"):
            del model.peft_config
    assert _fingerprint(model) == before


def test_same_config_same_adapter_and_fp16_halves_the_file(tiny, repeated, tmp_path):
    config = TrainConfig("rft", rank=8, epochs=0.5, batch_size=4, max_examples=12, seed=5)
    first = train_adapter(tiny, repeated, config, tmp_path / "a", progress=False)
    out_b = tmp_path / "b"
    out_b.mkdir()
    (out_b / "stale.txt").write_text("from an older run")
    second = train_adapter(tiny, repeated, config, out_b, progress=False)
    fp16 = TrainConfig(**{**config.__dict__, "adapter_dtype": "fp16"})
    half = train_adapter(tiny, repeated, fp16, tmp_path / "h", progress=False)

    assert (first.steps, first.examples) == (2, 12)  # half of ceil(12 / 4) batches, rounded up
    assert first.losses == second.losses
    a, b = load_file(tmp_path / "a" / "adapter_model.safetensors"), load_file(out_b / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out_b / "stale.txt").exists()  # an existing folder is replaced whole
    assert json.loads((out_b / "ranksweep.json").read_text())["kind"] == "rft"

    fp16_file, fp32_file = tmp_path / "h" / "adapter_model.safetensors", tmp_path / "a" / "adapter_model.safetensors"
    h = load_file(fp16_file)
    assert all(t.dtype == torch.float16 for t in h.values())
    assert all(torch.equal(h[k], a[k].half()) for k in a)
    assert {v["dtype"] for k, v in _header(fp16_file).items() if k != "__metadata__"} == {"F16"}
    assert 2 * _data_bytes(fp16_file) == _data_bytes(fp32_file)
    assert 0.45 < half.raw_bytes / first.raw_bytes < 0.6
    assert not any("lora_" in name for name, _ in tiny.model.named_modules())


@pytest.mark.parametrize(
    "change, examples, message",
    [
        ({"rank": 0}, None, "rank"),
        ({"rank": -3}, None, "rank"),
        ({"adapter_dtype": "bf16"}, None, "dtype"),
        ({}, [], "no training examples"),
        ({"max_length": 5}, None, "max_length"),
        ({"kind": "dpo"}, None, "kind"),
    ],
)
def test_bad_config_raises_and_writes_nothing(tiny, repeated, tmp_path, change, examples, message):
    before = _fingerprint(tiny.model)
    config = TrainConfig(**{**TrainConfig("sft", rank=2).__dict__, **change})
    with pytest.raises(RanksweepError, match=message):
        data = repeated if examples is None else examples
        train_adapter(tiny, data, config, tmp_path / "out" / "sft", progress=False)
    assert not (tmp_path / "out").exists()
    assert _fingerprint(tiny.model) == before


def test_embedded_model_trains_saves_and_reloads(tmp_path):
    from trainers.models import load_model

    loaded = load_model("embedded", "cpu")
    examples = sft_examples(generate_questions(2, seed=0)) * 4
    config = TrainConfig("sft", rank=2, lr=1e-2, epochs=1, batch_size=2)
    result = train_adapter(loaded, examples, config, tmp_path / "sft", progress=False)

    assert (result.steps, result.examples) == (4, 8)
    # r·(in + out) per all-linear target, 30 layers of the 135M model (hidden 576, kv 192, mlp 1536):
    # q, o 1,152; k, v 768; gate, up, down 2,112 -> 10,176 per layer, 305,280 per rank.
    assert result.trainable_params == 2 * 30 * (2 * 1152 + 2 * 768 + 3 * 2112) == 2 * 305_280
    assert result.losses[0] < 6 and result.losses[-1] < result.losses[0] / 2  # the answer format is learnt fast
    assert not any("lora_" in name for name, _ in loaded.model.named_modules())
    saved = load_file(tmp_path / "sft" / "adapter_model.safetensors")
    peft_model = PeftModel.from_pretrained(loaded.model, tmp_path / "sft")
    try:
        reloaded = _lora_state(peft_model)
        assert sum(t.numel() for t in reloaded.values()) == result.trainable_params
        assert sum(t.numel() for t in saved.values()) == result.trainable_params
    finally:
        peft_model.unload()


# ---- `ranksweep train` as a user runs it ----

def _homework_files(folder):
    train = folder / "train.json"
    train.write_text(json.dumps([["How many gram are there per 6 kg?", 6000.0], ["Convert 2 h to s.", 7200],
                                 ["What is 3 feet in inches?", 36.0]]))
    malformed = folder / "malformed.json"
    malformed.write_text('[["How many gram are there per 6 kg?", 6000.0], ')
    return train, malformed


def test_cli_trains_an_sft_adapter_on_tiny(cli, tmp_path):
    train, _ = _homework_files(tmp_path)
    out = tmp_path / "sft_model"
    done = cli("train", "sft", "--rank", "2", "--out", out, "--base-model", "tiny", "--device", "cpu", "--train-data",
               train, "--batch-size", "2", "--epochs", "2", "--adapter-dtype", "fp16", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert f"adapter folder:    {out}" in done.stdout
    assert "trainable params:  4,096" in done.stdout
    assert "steps:             4 (3 examples, batch 2)" in done.stdout
    notes = json.loads((out / "ranksweep.json").read_text())
    assert (notes["kind"], notes["rank"], notes["base_model"], notes["seed"]) == ("sft", 2, "tiny", 3)
    assert (notes["adapter_dtype"], notes["steps"], notes["batch_size"], notes["epochs"]) == ("fp16", 4, 2, 2.0)
    assert notes["data_sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert f"{notes['raw_bytes']:,} bytes (fp16)" in done.stdout
    assert _data_bytes(out / "adapter_model.safetensors") == 2 * 4096


@pytest.mark.parametrize(
    "kind, flags, expected",
    [
        ("sft", ["--rank", "0"], "--rank '0'"),
        ("sft", ["--rank", "-2"], "--rank '-2'"),
        ("sft", ["--rank", "abc"], "--rank 'abc'"),
        ("sft", ["--rank", "2", "--lr", "0"], "--lr '0'"),
        ("sft", ["--rank", "2", "--train-data", "MISSING"], "does not exist"),
        ("sft", ["--rank", "2", "--train-data", "MALFORMED"], "not valid JSON"),
        ("rft", ["--rank", "2", "--rft-data", "TRAIN"], "expected [question, number, reasoning]"),
        ("sft", ["--rank", "2", "--train-data", "TRAIN", "--base-model", "no-such-model"], "no-such-model"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, kind, flags, expected):
    train, malformed = _homework_files(tmp_path)
    paths = {"MISSING": tmp_path / "missing.json", "MALFORMED": malformed, "TRAIN": train}
    out = tmp_path / "out"
    done = cli("train", kind, "--out", out, "--device", "cpu", *[paths.get(f, f) for f in flags])
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("ranksweep: error: ") and expected in done.stderr
    assert not out.exists()


def test_cli_unknown_device_is_refused_before_anything_is_written(cli, tmp_path):
    out = tmp_path / "out"
    done = cli("train", "sft", "--rank", "2", "--out", out, "--device", "tpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--device" in done.stderr.strip().splitlines()[-1]  # argparse's usage line, then one error line
    assert not out.exists()


@pytest.mark.parametrize("native_bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)],
                         ids=["bf16-cpu", "fp32-cpu"])
def test_the_base_is_held_in_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch, native_bf16, dtype):
    from trainers import hardware
    from trainers.models import load_model

    monkeypatch.delenv("RANKSWEEP_CPU_BF16")
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device: native_bf16)
    loaded = load_model("tiny", "cpu")
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    assert hardware.use_bf16("cpu") == native_bf16


def test_training_on_a_bf16_base_keeps_the_lora_weights_in_float32(repeated, tmp_path, monkeypatch):
    from contextlib import contextmanager

    from trainers.models import load_model

    monkeypatch.setenv("RANKSWEEP_CPU_BF16", "1")  # the bf16 path, also on a CPU without avx512_bf16
    loaded = load_model("tiny", "cpu")
    before = _fingerprint(loaded.model)
    seen = {}

    @contextmanager
    def inspect(peft_model):
        yield
        seen["trainable"] = {p.dtype for p in peft_model.parameters() if p.requires_grad}
        seen["frozen"] = {p.dtype for p in peft_model.parameters() if not p.requires_grad}

    # The random tiny model's bf16 logits are coarse: its loss falls more slowly than on a float32 base.
    config = TrainConfig("sft", rank=8, lr=1e-1, dropout=0.0, epochs=15, batch_size=8)
    result = train_adapter(loaded, repeated, config, tmp_path / "a", progress=False, during=inspect)
    assert seen == {"trainable": {torch.float32}, "frozen": {torch.bfloat16}}
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 0.3
    assert _fingerprint(loaded.model) == before  # the bf16 base is handed back unchanged, still in bf16
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert _data_bytes(tmp_path / "a" / "adapter_model.safetensors") == 4 * result.trainable_params
    notes = json.loads((tmp_path / "a" / "ranksweep.json").read_text())
    assert notes["base_dtype"] == "bfloat16" and notes["bf16_autocast"] is True
