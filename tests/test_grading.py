"""The homework grading rule at its edges, Wilson intervals, points, and grading a real adapter on tiny."""

from __future__ import annotations

import json
import math

import pytest

from trainers.data import QA
from trainers.errors import RanksweepError
from trainers.grading import (
    Grade,
    answer_nll,
    grade_model,
    is_correct,
    mean_and_standard_error,
    parse_answer,
    points,
    read_adapter_kind,
    rft_points,
    score,
    sft_points,
    wilson_interval,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>6000</answer>", 6000.0),
        ("<answer>1,000</answer>", 1000.0),
        ("<answer>1e3</answer>", 1000.0),
        ("<answer>-2.5</answer>", -2.5),
        ("<answer> 2.5 </answer>", 2.5),
        ("1 kg = 1000 g. 6 * 1000 = 6000. <answer>6000</answer> done", 6000.0),
        ("<answer>1</answer> then <answer>2</answer>", 1.0),
        ("6000", None),
        ("<answer>6000", None),
        ("<answer>abc</answer>", None),
        ("<answer></answer>", None),
        ("<answer>6000 g</answer>", None),
        ("<answer>nan</answer>", None),
    ],
)
@pytest.mark.fast
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def make_adapter(tiny, folder, kind: str = "sft", rank: int = 4):
    """Save a real LoRA adapter (non-zero B, so it changes outputs) for the tiny model, with ranksweep.json."""
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    get_peft_model(copy.deepcopy(tiny.model), config).save_pretrained(folder)
    (folder / "ranksweep.json").write_text(json.dumps({"kind": kind, "rank": rank, "base_model": "tiny"}))
    return folder


@pytest.fixture(scope="module")
def tiny_adapter(tiny, tmp_path_factory):
    return make_adapter(tiny, tmp_path_factory.mktemp("adapter"))


@pytest.mark.parametrize(
    "answer, truth, expected",
    [
        (105.0, 100.0, False),  # exactly 5% over: the bound is strict
        (95.0, 100.0, False),  # exactly 5% under
        (104.9, 100.0, True),  # 4.9% over
        (95.1, 100.0, True),
        (104.9994, 100.0, True),  # rounds to 104.999
        (104.9996, 100.0, False),  # rounds to 105.0, exactly 5% off
        (-104.9, -100.0, True),  # negative truths use |truth|
        (-105.0, -100.0, False),
        (104.9, -100.0, False),
        (0.0, 0.0, True),
        (0.0004, 0.0, True),  # rounds to 0.0
        (-0.0004, 0.0, True),
        (0.0009, 0.0, False),  # rounds to 0.001, not below the 0.001 zero tolerance
        (0.0011, 0.0, False),
        (0.001, 0.0004, False),  # the truth rounds to 0.0, so the zero tolerance applies: 0.001 is not below it
        (0.0, 0.0004, True),
        (None, 5.0, False),
    ],
)
@pytest.mark.fast
def test_is_correct(answer, truth, expected):
    assert is_correct(answer, truth) is expected


@pytest.mark.fast
def test_is_correct_compares_rounded_values_for_small_truths():
    # 0.0254 rounds to 0.025, so the tolerance is 5% of 0.025 = 0.00125 around 0.025.
    assert is_correct(0.0254, 0.0254)
    assert is_correct(0.024, 0.0254)  # 5.5% below the raw truth, but 4% below the rounded one
    assert not is_correct(0.0232, 0.0254)  # rounds to 0.023: 8% below the rounded truth
    assert not is_correct(0.027, 0.0254)


def _wilson_by_hand(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = (z / (1 + z**2 / n)) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.fast
def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(42, 100) == pytest.approx(_wilson_by_hand(42, 100), abs=1e-9)
    assert wilson_interval(42, 100) == pytest.approx((0.3280, 0.5179), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.fast
@pytest.mark.parametrize(
    "acc, sft, rft",
    [
        (0.40, 0.0, 0.0),
        (0.50, 12.5, 0.0),
        (0.60, 25.0, 0.0),
        (0.65, 25.0, 12.5),
        (0.70, 25.0, 25.0),
        (0.75, 25.0, 27.5),
        (0.80, 25.0, 30.0),
        (0.90, 25.0, 30.0),
        (0.00, 0.0, 0.0),
    ],
)
def test_points(acc, sft, rft):
    assert sft_points(acc) == pytest.approx(sft)
    assert rft_points(acc) == pytest.approx(rft)
    assert points("sft", acc) == pytest.approx(sft)
    assert points("rft", acc) == pytest.approx(rft)


@pytest.mark.fast
def test_points_unknown_kind_is_a_user_error():
    with pytest.raises(RanksweepError):
        points("dpo", 0.5)


@pytest.mark.fast
def test_score_counts_hand_written_completions():
    completions = [
        "<answer>6000</answer>",  # right
        "<answer>5800</answer>",  # 3.3% off: right
        "<answer>7000</answer>",  # parsed, wrong
        "I think 6000",  # not parsed
        "<answer>-3</answer>",  # right
    ]
    grade = score("sft", completions, [6000.0, 6000.0, 6000.0, 6000.0, -3.0], seconds=1.5)
    assert (grade.questions, grade.correct, grade.parsed) == (5, 3, 4)
    assert grade.accuracy == pytest.approx(0.6)
    assert grade.answer_rate == pytest.approx(0.8)
    assert (grade.ci_low, grade.ci_high) == pytest.approx(_wilson_by_hand(3, 5))
    assert grade.points == pytest.approx(25.0)
    assert grade.seconds == 1.5
    as_json = grade.to_json()
    assert {"accuracy", "answer_rate", "ci_low", "ci_high", "questions", "points"} <= set(as_json)
    assert json.loads(json.dumps(as_json))["correct"] == 3
    assert score("rft", completions, [6000.0] * 4 + [-3.0]).points == pytest.approx(0.0)


@pytest.mark.fast
def test_mean_and_standard_error_by_hand():
    mean, se = mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
    # sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; SE = sqrt(5/3 / 4)
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 12))
    assert mean_and_standard_error([0.7]) == (0.7, 0.0)


NLL_ROWS = [QA("How many gram are there per 6 kg?", 6000.0), QA("Hi", 2.5), QA("Convert 3 hour to minute.", 180.0)]


def test_answer_nll_of_a_uniform_model_is_log_vocabulary(tiny):
    """A model whose output layer is zero predicts every token with probability 1/V: NLL = ln V per token."""
    import copy

    import torch

    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    vocabulary = model.get_output_embeddings().weight.shape[0]
    nll, se = answer_nll(model, tiny.tokenizer, NLL_ROWS, batch_size=2)
    assert nll == pytest.approx(math.log(vocabulary), rel=1e-5)
    assert se == pytest.approx(0.0, abs=1e-5)


def test_answer_nll_batched_equals_one_row_at_a_time_by_hand(tiny):
    """Right padding in a batch changes nothing: each row's NLL equals a forward pass on that row alone."""
    import torch

    from trainers.batching import tokenize_rows
    from trainers.training import format_answer

    by_hand = []
    rows, _ = tokenize_rows(tiny.tokenizer, [(r.question, format_answer(r.answer)) for r in NLL_ROWS], 10**9)
    with torch.inference_mode():
        for row in rows:
            ids = list(row.ids[:-1])  # EOS is not scored
            logprobs = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            scored = [-logprobs[t - 1, ids[t]].item() for t in range(row.prompt_tokens, len(ids))]
            assert len(scored) >= 4  # <answer>, digits, </answer>: several tokens
            by_hand.append(sum(scored) / len(scored))
    nll, se = answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS, batch_size=3)
    assert (nll, se) == pytest.approx(mean_and_standard_error(by_hand), rel=1e-4)
    assert answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS, batch_size=1) == pytest.approx((nll, se), rel=1e-4)
    assert nll > 5  # random weights: far from a model that knows the answer


@pytest.mark.fast
def test_read_adapter_kind(tmp_path):
    assert read_adapter_kind(tmp_path) is None
    (tmp_path / "ranksweep.json").write_text(json.dumps({"kind": "rft", "rank": 4}))
    assert read_adapter_kind(tmp_path) == "rft"
    (tmp_path / "ranksweep.json").write_text("[1, 2")
    with pytest.raises(RanksweepError):
        read_adapter_kind(tmp_path)


def test_grade_model_with_real_adapter_leaves_base_model_unchanged(tiny, tiny_adapter):
    import torch

    model = tiny.model
    weights = {name: t.clone() for name, t in model.state_dict().items()}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    rows = [QA(f"How many gram are there per {n} kg?", n * 1000.0) for n in range(1, 8)]

    grade = grade_model(tiny, rows, kind="sft", adapter_dir=tiny_adapter, questions=5, batch_size=2, progress=False)
    base = grade_model(tiny, rows, kind="sft", questions=None, batch_size=4, progress=False)

    assert isinstance(grade, Grade)
    assert grade.questions == 5 and base.questions == 7
    for g in (grade, base):
        assert 0 <= g.correct <= g.parsed <= g.questions
        assert g.accuracy == pytest.approx(g.correct / g.questions)
        assert g.ci_low <= g.accuracy <= g.ci_high
        assert g.seconds > 0
        assert g.answer_nll > 0 and g.answer_nll_se >= 0
        assert {"answer_nll", "answer_nll_se"} <= set(g.to_json())
    assert not [name for name, _ in model.named_modules() if "lora_" in name]
    assert not hasattr(model, "peft_config")
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(model.state_dict()[name], t) for name, t in weights.items())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad


def test_grade_model_rejects_an_adapter_for_another_model_and_cleans_up(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainers.models import tiny_config

    config = tiny_config(tiny.tokenizer)
    config.hidden_size, config.intermediate_size = 32, 64  # same layer names, other shapes
    other = AutoModelForCausalLM.from_config(config)
    get_peft_model(other, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(tmp_path)
    weights = {name: t.clone() for name, t in tiny.model.state_dict().items()}
    with pytest.raises(RanksweepError, match="--base-model"):
        grade_model(tiny, [QA("q?", 1.0)], kind="sft", adapter_dir=tmp_path, progress=False)
    assert not [name for name, _ in tiny.model.named_modules() if "lora_" in name]
    assert all(torch.equal(tiny.model.state_dict()[name], t) for name, t in weights.items())


def test_grade_model_rejects_a_folder_without_adapter(tiny, tmp_path):
    with pytest.raises(RanksweepError, match="adapter_config.json"):
        grade_model(tiny, [QA("q?", 1.0)], kind="sft", adapter_dir=tmp_path, progress=False)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("valid") / "valid.json"
    path.write_text(json.dumps([[f"How many gram are there per {n} kg?", n * 1000.0] for n in range(1, 6)]))
    return path


def test_grade_command_json(cli, tiny_adapter, valid_file):
    result = cli("grade", "--adapter", tiny_adapter, "--base-model", "tiny", "--device", "cpu",
                 "--valid-data", valid_file, "--questions", "3", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    grade = json.loads(lines[0])
    assert {"accuracy", "answer_rate", "ci_low", "ci_high", "questions", "points"} <= set(grade)
    assert grade["questions"] == 3 and grade["kind"] == "sft"
    assert grade["accuracy"] == pytest.approx(grade["correct"] / 3)
    assert 0 <= grade["ci_low"] <= grade["accuracy"] <= grade["ci_high"] <= 1


def test_grade_command_summary_for_the_base_model(cli, valid_file):
    result = cli("grade", "--adapter", "none", "--kind", "rft", "--base-model", "tiny", "--device", "cpu",
                 "--valid-data", valid_file, "--questions", "all", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "(0/5" in result.stdout and "points" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adapter", "no-such-folder"], "does not exist"),
        (["--adapter", "none"], "--kind"),
        (["--adapter", "none", "--kind", "sft", "--questions", "0"], "--questions"),
        (["--adapter", "none", "--kind", "sft", "--batch-size", "x"], "--batch-size"),
        (["--adapter", "none", "--kind", "sft", "--valid-data", "bad.json"], "not valid JSON"),
        (["--adapter", "none", "--kind", "sft", "--valid-data", "missing.json"], "does not exist"),
    ],
)
def test_grade_command_bad_input_is_one_line(cli, tmp_path, args, message):
    (tmp_path / "bad.json").write_text('[["How many gram are there per 6 kg?", 6000.0],')
    result = cli("grade", "--base-model", "tiny", "--device", "cpu", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ranksweep: error:")
    assert message in result.stderr


def test_grade_command_rejects_a_kind_that_contradicts_the_adapter(cli, tiny_adapter):
    result = cli("grade", "--adapter", tiny_adapter, "--kind", "rft", "--base-model", "tiny")
    assert result.returncode == 2 and "trained as sft" in result.stderr


def test_answer_nll_after_a_context_scores_only_the_answer_by_hand(tiny):
    """With a context (an RFT adapter's own reasoning), only the answer's tokens after question + context count."""
    import torch

    from trainers.training import format_answer

    contexts = ["1 kg = 1000 g. 6 * 1000 = 6000. ", "", "3 * 60 = 180."]
    by_hand = []
    with torch.inference_mode():
        for row, context in zip(NLL_ROWS, contexts):
            prompt = tiny.tokenizer(row.question)["input_ids"]
            lead = tiny.tokenizer(" " + context.strip(), add_special_tokens=False)["input_ids"] if context else []
            tail = tiny.tokenizer((" " if context else " ") + format_answer(row.answer),
                                  add_special_tokens=False)["input_ids"]
            ids = prompt + lead + tail
            logprobs = torch.log_softmax(tiny.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            first = len(prompt) + len(lead)
            by_hand.append(-sum(logprobs[t - 1, ids[t]].item() for t in range(first, len(ids))) / (len(ids) - first))
    nll, se = answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS, contexts=contexts, batch_size=2)
    assert (nll, se) == pytest.approx(mean_and_standard_error(by_hand), rel=1e-4)
    # The context changes what is scored: not the same number as the answer straight after the question.
    assert nll != pytest.approx(answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS)[0], rel=1e-5)
    # Empty contexts are the plain case.
    assert answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS, contexts=["", "", ""]) == pytest.approx(
        answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS), rel=1e-6)


def test_an_rft_grade_scores_the_answer_after_its_own_chain(tiny):
    from trainers.generation import greedy
    from trainers.grading import _before_answer, grade_model

    rft = grade_model(tiny, NLL_ROWS, kind="rft", questions=None, progress=False, max_new_tokens=6)
    sft = grade_model(tiny, NLL_ROWS, kind="sft", questions=None, progress=False, max_new_tokens=6)
    chains = greedy(tiny.model, tiny.tokenizer, [r.question for r in NLL_ROWS], max_new_tokens=6)
    assert all(_before_answer(c) for c in chains)  # random weights write text, never an answer tag
    expected = answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS, contexts=[_before_answer(c) for c in chains])
    assert (rft.answer_nll, rft.answer_nll_se) == pytest.approx(expected, rel=1e-4)
    assert (sft.answer_nll, sft.answer_nll_se) == pytest.approx(answer_nll(tiny.model, tiny.tokenizer, NLL_ROWS),
                                                                rel=1e-4)


def test_a_hopeless_answer_never_parses_whatever_follows():
    from trainers.grading import answer_is_hopeless

    prefixes = ["so <answer>6", "<answer>6 000</ans", "<answer>-1.5e3", "<answer>", "x = 5", "<answer>6 g",
                "<answer>6000 kg", "<answer>about", "<answer>x<answer>5", "<answer>1_0"]
    endings = ["", "</answer>", "0</answer>", " </answer>", "00 g</answer>", "</answer> more"]
    for prefix in prefixes:
        if answer_is_hopeless(prefix):
            assert all(parse_answer(prefix + end) is None for end in endings), prefix
    hopeless = [p for p in prefixes if answer_is_hopeless(p)]
    assert hopeless == ["<answer>6 g", "<answer>6000 kg", "<answer>about"]
    # Still open to a number, or already closed: never given up on.
    assert parse_answer("<answer>6 000</answer>") == 6000 and not answer_is_hopeless("<answer>6</answer> g")
