"""Batched generation on the tiny model: greedy equals HF generate row by row, stop strings cut, sampling is seeded."""

from __future__ import annotations

import pytest

from trainers.generation import greedy, sample

PROMPTS = [
    "How many gram are there per 6 kg?",
    "Hi",
    "Could you please convert 12.5 miles into kilometers, showing every step of the way?",
    "Convert 3 hour to minute.",
    "What is 7 foot in inch?",
]


def hf_greedy(loaded, prompt: str, max_new_tokens: int) -> str:
    """The reference: HF generate on the prompt alone (no padding), new tokens decoded."""
    import torch

    encoded = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model.generate(
            **encoded, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=loaded.tokenizer.pad_token_id
        )
    return loaded.tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def test_batched_greedy_equals_hf_generate_per_row(tiny):
    # Batches of 2 mix prompts of different lengths, so left padding is exercised.
    batched = greedy(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=12, stop="</never>", batch_size=2)
    assert batched == [hf_greedy(tiny, p, 12) for p in PROMPTS]
    assert all(batched)


def test_greedy_results_do_not_depend_on_batch_size(tiny):
    one = greedy(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=10, batch_size=1)
    many = greedy(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=10, batch_size=32)
    assert one == many


def test_stop_string_cuts_right_after_it(tiny):
    full = greedy(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=16, stop="</never>")
    # Take a stop string from inside the first completion: the output must end right after its first occurrence.
    stop = full[0][len(full[0]) // 2 :][:4]
    assert len(stop) == 4
    cut = greedy(tiny.model, tiny.tokenizer, PROMPTS, max_new_tokens=16, stop=stop)
    for whole, short in zip(full, cut):
        at = whole.find(stop)
        assert short == (whole if at < 0 else whole[: at + len(stop)])
    assert cut[0].endswith(stop) and len(cut[0]) < len(full[0])


def test_greedy_keeps_model_mode(tiny):
    tiny.model.train()
    try:
        greedy(tiny.model, tiny.tokenizer, PROMPTS[:1], max_new_tokens=2)
        assert tiny.model.training
    finally:
        tiny.model.eval()


def test_sampling_is_seeded_and_returns_k_per_prompt(tiny):
    kwargs = dict(k=3, temperature=1.0, max_new_tokens=8, batch_size=6)
    first = sample(tiny.model, tiny.tokenizer, PROMPTS, seed=7, **kwargs)
    again = sample(tiny.model, tiny.tokenizer, PROMPTS, seed=7, **kwargs)
    other = sample(tiny.model, tiny.tokenizer, PROMPTS, seed=8, **kwargs)
    assert [len(texts) for texts in first] == [3] * len(PROMPTS)
    assert first == again
    assert first != other
    # At temperature 1 over a 49k vocabulary, the k samples of one prompt differ from each other.
    assert all(len(set(texts)) > 1 for texts in first)


def test_sampling_reports_each_batch(tiny):
    seen = []
    result = sample(
        tiny.model, tiny.tokenizer, PROMPTS, k=2, temperature=0.7, max_new_tokens=3, seed=0, batch_size=4,
        on_batch=lambda indices, texts: seen.append((list(indices), texts)),
    )
    assert sorted(i for indices, _ in seen for i in indices) == list(range(len(PROMPTS)))
    assert all(len(indices) <= 2 for indices, _ in seen)  # batch_size 4 sequences = 2 prompts of k=2
    for indices, texts in seen:
        assert [result[i] for i in indices] == texts


def test_sampling_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError):
        sample(tiny.model, tiny.tokenizer, PROMPTS, k=0, temperature=1.0, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError):
        sample(tiny.model, tiny.tokenizer, PROMPTS, k=2, temperature=0.0, max_new_tokens=2, seed=0)


def test_empty_prompt_list(tiny):
    assert greedy(tiny.model, tiny.tokenizer, [], max_new_tokens=4) == []
    assert sample(tiny.model, tiny.tokenizer, [], k=2, temperature=1.0, max_new_tokens=4, seed=0) == []


FEW_SHOT_PROMPTS = [f"You convert units. Example: 6 kg = 6000 g.\nQuestion: {p}\nAnswer:" for p in PROMPTS]


@pytest.mark.parametrize("bf16", [False, True])
def test_sampling_at_near_zero_temperature_is_greedy(tiny, bf16):
    """Both arithmetic paths (float32, and bfloat16 autocast where a CPU may lack it) decode like greedy."""
    kwargs = dict(max_new_tokens=10, stop="</never>")
    reference = greedy(tiny.model, tiny.tokenizer, FEW_SHOT_PROMPTS, batch_size=8, **kwargs)
    sampled = sample(tiny.model, tiny.tokenizer, FEW_SHOT_PROMPTS, k=2, temperature=1e-6, seed=0, batch_size=4,
                     bf16=bf16, **kwargs)
    if bf16:  # rounding may flip a near-tie on random weights; most rows must still agree
        assert sum(texts[0] == ref for texts, ref in zip(sampled, reference)) >= len(PROMPTS) - 1
    else:
        assert [texts[0] for texts in sampled] == reference
        assert [texts[1] for texts in sampled] == reference


def test_stop_rule_closes_on_the_token_that_completes_the_stop_string(tiny):
    from trainers.generation import StopRule

    tokenizer = tiny.tokenizer
    ids = tokenizer("1 kg = 1000 g. 6 * 1000 = 6000. <answer>6000</answer> and more", add_special_tokens=False)[
        "input_ids"]
    rule = StopRule(tokenizer, "</answer>")
    closed_at = [n for n in range(1, len(ids) + 1) if rule.closed(ids[:n])]
    # The first prefix that closes is the one whose text first contains the stop string; it stays closed.
    first = next(n for n in range(1, len(ids) + 1) if "</answer>" in tokenizer.decode(ids[:n]))
    assert closed_at and closed_at[0] == first
    assert not rule.closed(ids[: first - 1]) and not StopRule(tokenizer, "").closed(ids)


def test_a_row_stops_at_the_first_token_its_answer_cannot_survive(tiny):
    from trainers.generation import StopRule
    from trainers.grading import answer_is_hopeless

    tokenizer = tiny.tokenizer
    text = "6 * 1000 = 6000. <answer>6,000 grams</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rule = StopRule(tokenizer, "</answer>", answer_is_hopeless)
    done_at = next(n for n in range(1, len(ids) + 1) if rule.done(0, ids[:n]))
    # The first token that writes a letter after "<answer>6,000 " is where it stops; the number before it did not.
    first = next(n for n in range(1, len(ids) + 1) if "g" in tokenizer.decode(ids[:n]).split("<answer>")[-1])
    assert done_at == first and "<answer>" in tokenizer.decode(ids[: done_at - 1])
    # Without give_up the same row runs on to its closing tag.
    plain = StopRule(tokenizer, "</answer>")
    assert next(n for n in range(1, len(ids) + 1) if plain.done(0, ids[:n])) == len(ids)


def test_sampled_rows_stop_at_the_stop_string(tiny):
    """A row leaves the batch at its stop string: each completion holds it once, at its very end, or never."""
    stop = "e"
    texts = sample(tiny.model, tiny.tokenizer, FEW_SHOT_PROMPTS, k=4, temperature=1.0, max_new_tokens=12, stop=stop,
                   seed=5, batch_size=8)
    stopped = [t for row in texts for t in row if stop in t]
    assert len(stopped) >= 5  # random weights over 49k tokens: many contain an "e"
    assert all(t.find(stop) == len(t) - len(stop) for t in stopped)
    running = [t for row in texts for t in row if stop not in t]
    assert all(len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) >= 10 for t in running)


@pytest.mark.fast
def test_bf16_choice_follows_the_cpu_flags():
    from pathlib import Path

    from trainers.hardware import bf16_is_fast

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert bf16_is_fast("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_shared_prefix_prefill_gives_the_logits_of_the_whole_prompt(tiny):
    """Batches that start from the shared prefix's cache decode exactly like batches that encode it whole."""
    from trainers.generation import SharedPrefix, _decode_batch

    ids = tiny.tokenizer(FEW_SHOT_PROMPTS)["input_ids"]
    shared = SharedPrefix.length(ids)
    assert shared >= 12 and all(row[:shared] == ids[0][:shared] for row in ids)

    def pick(logits):
        return logits.argmax(dim=-1)

    import torch

    with torch.inference_mode():
        prefix = SharedPrefix(tiny.model, ids[0][:shared])
        split = _decode_batch(tiny.model, tiny.tokenizer, FEW_SHOT_PROMPTS, 2, 10, "</never>", pick, prefix)
        whole = _decode_batch(tiny.model, tiny.tokenizer, FEW_SHOT_PROMPTS, 2, 10, "</never>", pick)
    assert split == whole and all(split)
    assert SharedPrefix.length([[1, 2, 3], [1, 2, 3]]) == 2  # each row keeps a token of its own
