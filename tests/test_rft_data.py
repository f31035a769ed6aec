"""Rejection sampling: picking a correct completion, counts on tiny, the cache, and the `rft-data` command.

The keep path needs a model that answers correctly, which random `tiny` never does. So a copy of tiny is
really fine-tuned to answer every few-shot prompt here with `<answer>0</answer>`: right for questions whose
answer is 0, wrong for the rest.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from trainers.data import QA, read_rft, write_qa
from trainers.errors import RanksweepError
from trainers.prompts import WORKED_EXAMPLES, few_shot_prompt
from trainers.rft_data import RFTSettings, ensure_rft_data, generate_rft, pick_reasoning, read_report

ZERO_QUESTIONS = [QA("How many gram are there per 0 kg?", 0.0), QA("Convert 0 hour to minute.", 0.0)]
NONZERO_QUESTION = QA("What is 5 foot in inch?", 60.0)
ZERO_REASONING = "<answer>0</answer>"
FAST = RFTSettings(samples=2, temperature=0.7, max_new_tokens=16, seed=3, batch_size=8)


@pytest.mark.fast
def test_pick_reasoning_takes_the_first_correct_completion_and_cuts_after_the_tag():
    completions = [
        "1 kg = 1000 g. 6 * 1000 = 7000. <answer>7000</answer>",  # wrong
        "6 kg is a lot <answer>6000",  # no closing tag
        "1 kg = 1000 g. 6 * 1000 = 6000. <answer>6,000</answer> and more",  # right
        "<answer>6001</answer>",  # right too, but later
    ]
    assert pick_reasoning(completions, 6000.0) == "1 kg = 1000 g. 6 * 1000 = 6000. <answer>6,000</answer>"
    assert pick_reasoning(completions[:2], 6000.0) is None
    assert pick_reasoning([], 6000.0) is None
    assert pick_reasoning(["  about <answer>5800</answer>\n"], 6000.0) == "about <answer>5800</answer>"


def test_few_shot_prompt_ends_with_the_question_for_the_assistant(tiny):
    prompt = few_shot_prompt(tiny.tokenizer, "Convert 3 mile to yard.")
    assert prompt.rstrip().endswith("assistant")
    assert all(reasoning in prompt for _, reasoning in WORKED_EXAMPLES)
    assert "Convert 3 mile to yard." in prompt


def test_generate_rft_on_tiny_counts_are_consistent(tiny):
    rows = [QA(f"How many gram are there per {n} kg?", n * 1000.0) for n in (1, 2, 3)]
    report = generate_rft(tiny, rows, RFTSettings(questions=2, **_fields(FAST, "questions")), progress=False)
    assert report.asked == 2
    assert report.completions == 2 * FAST.samples
    assert report.kept == len(report.rows) == 0  # random weights never write a correct answer tag
    assert report.success_rate == 0.0
    assert report.seconds > 0


def _fields(settings: RFTSettings, *drop: str) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(settings).items() if k not in drop}


@pytest.fixture(scope="module")
def zero_answerer(tiny, tmp_path_factory):
    """A tiny model folder fine-tuned (all weights) to complete the few-shot prompts below with ZERO_REASONING."""
    import torch

    tokenizer = tiny.tokenizer
    model = copy.deepcopy(tiny.model).train()
    target = tokenizer(ZERO_REASONING, add_special_tokens=False)["input_ids"]
    prompts = [tokenizer(few_shot_prompt(tokenizer, qa.question))["input_ids"] for qa in ZERO_QUESTIONS + [NONZERO_QUESTION]]
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    labels = torch.tensor(target)
    for _ in range(60):
        optimizer.zero_grad()
        loss = 0.0
        for prompt in prompts:
            hidden = model.model(input_ids=torch.tensor([prompt + target])).last_hidden_state
            # Logits only where the completion is predicted: the 49k-word head over the whole prompt is the slow part.
            logits = model.lm_head(hidden[0, len(prompt) - 1 : -1])
            loss = loss + torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3  # summed over the 3 prompts: each target token is near-certain
    folder = tmp_path_factory.mktemp("zero-answerer")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.json"
    write_qa(path, ZERO_QUESTIONS + [NONZERO_QUESTION])
    return path


# Both generator paths: float32 weights, and weights cast to bfloat16 (the default on CPUs with avx512_bf16).
@pytest.mark.parametrize("bf16, dtype", [("0", "float32"), ("1", "bfloat16")])
def test_ensure_rft_data_keeps_correct_chains_and_caches_them(zero_answerer, train_file, tmp_path, monkeypatch,
                                                             bf16, dtype):
    monkeypatch.setenv("RANKSWEEP_CPU_BF16", bf16)
    cache = tmp_path / "cache"
    path = ensure_rft_data(str(zero_answerer), "cpu", train_file, FAST, cache_root=cache, progress=False)
    rows = read_rft(path)
    assert [(r.question, r.answer) for r in rows] == [(q.question, q.answer) for q in ZERO_QUESTIONS]
    assert all(r.reasoning.endswith("<answer>0</answer>") for r in rows)
    report = read_report(path)
    assert report["dtype"] == dtype
    assert (report["asked"], report["kept"], report["completions"]) == (3, 2, 3 * FAST.samples)
    assert report["success_rate"] == pytest.approx(2 / 3)

    before = os.stat(path).st_mtime_ns
    again = ensure_rft_data(str(zero_answerer), "cpu", train_file, FAST, cache_root=cache, progress=False)
    assert again == path and os.stat(path).st_mtime_ns == before  # served from the cache, not regenerated

    # Other settings are another cache entry.
    other = RFTSettings(questions=1, **_fields(FAST, "questions"))
    first_only = ensure_rft_data(str(zero_answerer), "cpu", train_file, other, cache_root=cache, progress=False)
    assert first_only != path and len(read_rft(first_only)) == 1


def test_ensure_rft_data_with_nothing_kept_writes_nothing(zero_answerer, tmp_path):
    train = tmp_path / "train.json"
    write_qa(train, [NONZERO_QUESTION])
    cache = tmp_path / "cache"
    with pytest.raises(RanksweepError, match="kept none"):
        ensure_rft_data(str(zero_answerer), "cpu", train, FAST, cache_root=cache, progress=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_rft_data_command_writes_the_homework_file(cli, zero_answerer, train_file, tmp_path):
    out = tmp_path / "data" / "rft.json"
    env = {"RANKSWEEP_CACHE": str(tmp_path / "cache")}
    args = ["rft-data", "--out", out, "--base-model", zero_answerer, "--device", "cpu", "--train-data", train_file,
            "--samples", "2", "--max-new-tokens", "16", "--seed", "3"]
    result = cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [row[:2] for row in data] == [[q.question, q.answer] for q in ZERO_QUESTIONS]
    assert all(row[2].endswith("<answer>0</answer>") for row in data)
    assert "66.7%" in result.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--samples", "0"], "--samples"),
        (["--temperature", "-1"], "--temperature"),
        (["--questions", "0"], "--questions"),
        (["--train-data", "missing.json"], "does not exist"),
    ],
)
def test_rft_data_command_bad_input_is_one_line(cli, tmp_path, extra, message):
    out = tmp_path / "rft.json"
    result = cli("rft-data", "--out", out, "--base-model", "tiny", "--device", "cpu", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not out.exists()


def test_rft_data_command_with_nothing_kept_writes_nothing(cli, train_file, tmp_path):
    out = tmp_path / "rft.json"
    result = cli("rft-data", "--out", out, "--base-model", "tiny", "--device", "cpu", "--train-data", train_file,
                 "--samples", "1", "--max-new-tokens", "4")
    assert result.returncode == 2
    # The progress bar drew on stderr before; the error itself is its last line, with no traceback.
    assert "kept none" in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    assert not out.exists()


def test_few_shot_prompts_by_level(tiny):
    from trainers.fewshot import FEW_SHOTS, HOMEWORK, METRIC_PREFIX, few_shot_named
    from trainers.unitgen import LEVELS

    question = "Convert 46 liters to milliliters."
    assert HOMEWORK.render(tiny.tokenizer, question) == few_shot_prompt(tiny.tokenizer, question)
    short = METRIC_PREFIX.render(tiny.tokenizer, question)
    assert short.rstrip().endswith("assistant") and question in short
    # Every sampled token attends over the prompt: the level's prompt is far shorter than the homework one.
    lengths = {name: len(tiny.tokenizer(p.render(tiny.tokenizer, question))["input_ids"]) for name, p in FEW_SHOTS.items()}
    assert lengths["metric-prefix"] < 0.5 * lengths["homework"]
    assert set(LEVELS) <= set(FEW_SHOTS)
    for _, reasoning in METRIC_PREFIX.examples:  # each example's own answer passes the grading rule
        assert pick_reasoning([reasoning], float(reasoning.split("<answer>")[1].split("<")[0])) == reasoning
    with pytest.raises(RanksweepError):
        few_shot_named("nope")
    assert METRIC_PREFIX.fingerprint() != HOMEWORK.fingerprint()


def test_no_progress_silences_rft_sampling_and_train_and_grade_take_it(cli, ranksweep, tmp_path):
    """`train rft` without --rft-data samples chains first: with --no-progress no bar is drawn (tiny keeps none, so
    the command ends with its one-line error, and that line is all of stderr); `grade` takes the flag too."""
    data = tmp_path / "two.json"
    write_qa(data, [NONZERO_QUESTION, QA("How many gram are there per 2 kg?", 2000.0)])
    env = {"RANKSWEEP_CACHE": str(tmp_path / "cache")}
    args = ("train", "rft", "--rank", "2", "--out", tmp_path / "out", "--base-model", "tiny", "--device", "cpu",
            "--train-data", data)
    loud = cli(*args, env=env)
    assert loud.returncode == 2 and "rft samples" in loud.stderr  # the bar this flag silences
    quiet = cli(*args, "--no-progress", env=env)
    assert quiet.returncode == 2, quiet.stderr
    assert quiet.stderr.startswith("ranksweep: error: Rejection sampling kept none") and quiet.stderr.count("\n") == 1
    graded = ranksweep("grade", "--adapter", "none", "--kind", "sft", "--base-model", "tiny", "--device", "cpu",
                       "--valid-data", data, "--questions", "2", "--no-progress")
    assert graded.returncode == 0 and graded.stderr == "", graded.stderr
