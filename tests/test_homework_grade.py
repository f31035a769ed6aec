"""`ranksweep grade --homework`: an adapter graded by the homework's own code in a scratch copy, next to
ranksweep's grade, and the prompt template that makes the two agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homework_fixtures import CHAT, homework_copy, tree_digest
from trainers.data import write_json_atomic


def grade_json(cli, tree: Path, adapter: Path, *extra: str) -> dict:
    result = cli("grade", "--homework", tree, "--adapter", adapter, "--base-model", "tiny", "--kind", "sft",
                 "--device", "cpu", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_homework_grade_differs_with_the_format_and_agrees_with_the_template(cli, tiny, tmp_path):
    # Every answer is 7: a task the tiny model learns in 45 steps, so what decides its accuracy is whether it
    # is asked in the text it was trained on.
    tree = homework_copy(tmp_path, CHAT)
    write_json_atomic(tree / "data" / "train.json", [[f"How many gram are there per {n} kg?", 7.0] for n in range(1, 25)])
    write_json_atomic(tree / "data" / "valid.json", [[f"How many meter are there per {n} km?", 7.0] for n in range(1, 9)])
    before = tree_digest(tree)
    from trainers.data import read_qa
    from trainers.prompts import templated
    from trainers.training import TrainConfig, sft_examples, train_adapter

    examples = sft_examples(read_qa(tree / "data" / "train.json"))
    config = TrainConfig(kind="sft", rank=8, lr=1e-2, epochs=15, batch_size=8)
    for name, template in (("raw", "{question}"), ("chat", CHAT)):
        # What `ranksweep train sft --prompt-template T` does, in this process to spare a model load.
        train_adapter(tiny, templated(examples, template), config, tmp_path / name, progress=False,
                      metadata={"prompt_template": template})

    raw = grade_json(cli, tree, tmp_path / "raw")
    # Trained on the raw question, graded by ranksweep on the raw question: learnt. The homework asks in its
    # chat format and gets something else.
    assert raw["prompt_template"] == "{question}"
    assert raw["accuracy"] == 1.0
    assert raw["homework"]["questions"] == raw["questions"] == 8
    assert raw["homework"]["accuracy"] <= 0.5

    # The same comparison through the functions the command calls (one model load fewer), for the adapter
    # trained on the homework's own text: both graders see what the user's code will see, and agree.
    from sweep.homework.config import read_config
    from sweep.homework.grade import grade_with_homework
    from trainers.data import QA
    from trainers.grading import grade_model
    from trainers.prompts import read_adapter_template, render_prompt

    assert read_adapter_template(tmp_path / "chat") == CHAT
    rows = [QA(render_prompt(CHAT, r.question), r.answer) for r in read_qa(tree / "data" / "valid.json")]
    ours = grade_model(tiny, rows, kind="sft", adapter_dir=tmp_path / "chat", progress=False)
    theirs = grade_with_homework(tree, tmp_path / "chat", "sft", questions=100, config=read_config(tree),
                                 base_model="tiny")
    assert theirs.accuracy == ours.accuracy == 1.0
    assert theirs.answer_rate == ours.answer_rate == 1.0
    assert tree_digest(tree) == before


def test_a_failing_homework_loader_is_one_sentence_with_its_last_lines(cli, tmp_path):
    tree = homework_copy(tmp_path)
    (tree / "ranksweep.toml").write_text('[homework]\nsft_loader = "homework.sft:load_missing"\n')
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    before = tree_digest(tree)
    result = cli("grade", "--homework", tree, "--adapter", adapter, "--base-model", "tiny", "--kind", "sft")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr.splitlines()[0]
    assert "homework's own SFT grading (homework.sft:load_missing" in result.stderr
    assert "failed with exit code 1" in result.stderr
    assert "AttributeError" in result.stderr  # the last lines of the homework's own output
    assert tree_digest(tree) == before


@pytest.mark.parametrize("setting, message", [
    ('grade_timeout_s = "soon"', "grade_timeout_s must be a number of seconds"),
    ('sft_loaders = "x:y"', "unknown setting(s) sft_loaders"),
    ('checkpoint = "homework/base_llm.py:model_name"', "no module-level assignment to model_name"),
])
def test_bad_homework_settings_are_refused_before_running_anything(cli, tmp_path, setting, message):
    tree = homework_copy(tmp_path)
    (tree / "ranksweep.toml").write_text(f"[homework]\n{setting}\n")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (adapter / name).write_text("{}")
    result = cli("grade", "--homework", tree, "--adapter", adapter, "--base-model", "tiny", "--kind", "sft")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_template_without_the_question_is_refused(cli, tmp_path):
    result = cli("train", "sft", "--rank", "1", "--out", tmp_path / "a", "--base-model", "tiny",
                 "--prompt-template", "Q: {q}")
    assert result.returncode == 2
    assert "does not contain {question}" in result.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.fast
def test_a_timeout_stops_the_homework_command(tmp_path):
    from sweep.homework.run import HomeworkCommandError, run_logged

    with pytest.raises(HomeworkCommandError, match="ran past its timeout of 0.5 s") as caught:
        run_logged(["sh", "-c", "echo started; sleep 30"], cwd=tmp_path, log=tmp_path / "log", timeout=0.5,
                   what="The sleeper")
    assert "started" in str(caught.value)


@pytest.mark.fast
def test_the_checkpoint_string_is_rewritten_and_nothing_else(tmp_path):
    from sweep.homework.tree import set_string_constant

    tree = homework_copy(tmp_path)
    source = tree / "homework" / "base_llm.py"
    before = source.read_text()
    set_string_constant(tree, "homework/base_llm.py:checkpoint", "/models/tiny")
    after = source.read_text()
    assert after == before.replace('checkpoint = "HuggingFaceTB/SmolLM2-360M-Instruct"', 'checkpoint = "/models/tiny"')
    assert after != before


def test_a_prompt_ending_in_whitespace_is_followed_directly_by_the_completion(tiny):
    from trainers.batching import tokenize_rows

    tokenizer = tiny.tokenizer
    for prompt in ("How many gram are there per 6 kg?", "How many gram are there per 6 kg? "):
        (row,), _ = tokenize_rows(tokenizer, [(prompt, "<answer>6000</answer>")], 64)
        text = tokenizer.decode(row.ids[: -1])
        # One space between question and answer either way; with the trailing space it is the prompt's own token.
        assert text.endswith("kg? <answer>6000</answer>")
        assert tokenizer.decode(row.ids[: row.prompt_tokens]) == prompt
