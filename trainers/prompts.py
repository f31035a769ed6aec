"""The few-shot chat prompt that asks an instruct model for a short unit-conversion reasoning chain.

Small models copy the shape of the examples closely, so every example has the same three beats:
the conversion factor as `1 A = F B`, the one multiplication, and the answer tag.
"""

from __future__ import annotations

import hashlib
import json

SYSTEM = (
    "You convert units. Reply in one line: state the conversion factor, multiply, "
    "and give the number in <answer></answer> tags."
)

WORKED_EXAMPLES: list[tuple[str, str]] = [
    (
        "How many gram are there per 6 kg?",
        "1 kg = 1000 gram. 6 * 1000 = 6000. <answer>6000</answer>",
    ),
    (
        "Convert 2.5 hour to minute.",
        "1 hour = 60 minute. 2.5 * 60 = 150. <answer>150</answer>",
    ),
    (
        "What is 3 foot in inch?",
        "1 foot = 12 inch. 3 * 12 = 36. <answer>36</answer>",
    ),
    (
        "How many meter are in 450 centimeter?",
        "1 centimeter = 0.01 meter. 450 * 0.01 = 4.5. <answer>4.5</answer>",
    ),
]


def few_shot_messages(question: str) -> list[dict[str, str]]:
    """Chat messages: the system instruction, the worked examples as past turns, then `question`."""
    messages = [{"role": "system", "content": SYSTEM}]
    for example_question, reasoning in WORKED_EXAMPLES:
        messages.append({"role": "user", "content": example_question})
        messages.append({"role": "assistant", "content": reasoning})
    messages.append({"role": "user", "content": question})
    return messages


def few_shot_prompt(tokenizer, question: str) -> str:
    """The few-shot prompt as text, rendered by the tokenizer's chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        # Base (non-instruct) models have no template: a plain transcript keeps the same pattern.
        return _plain_transcript(question)
    return tokenizer.apply_chat_template(few_shot_messages(question), tokenize=False, add_generation_prompt=True)


def _plain_transcript(question: str) -> str:
    lines = [SYSTEM, ""]
    for example_question, reasoning in WORKED_EXAMPLES:
        lines += [f"Question: {example_question}", f"Answer: {reasoning}", ""]
    lines += [f"Question: {question}", "Answer:"]
    return "\n".join(lines)


def prompt_fingerprint() -> str:
    """A short hash of the prompt's content, so cached RFT data is regenerated when the prompt changes."""
    blob = json.dumps([SYSTEM, WORKED_EXAMPLES]).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]
