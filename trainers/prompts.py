"""The text a model is prompted with: the few-shot chat prompt that asks an instruct model for a short
unit-conversion reasoning chain (RFT data), and the prompt template that turns a question into the exact
text an adapter is trained and graded on.

Small models copy the shape of the examples closely, so every example has the same three beats:
the conversion factor as `1 A = F B`, the one multiplication, and the answer tag.

A prompt template is a string holding `{question}` once, e.g. `{question} ` for a homework whose
`format_prompt` appends a space. The default, `{question}`, is the raw question: ranksweep's format
before templates existed, so adapters and grades made without one keep their meaning.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from trainers.errors import RanksweepError

# A small model knows few conversion factors but copies well from its context: measured on the
# built-in questions (24 questions x 8 samples, 135M embedded model), this table doubled the share of
# questions with a correct sample (3/24 -> 6/24) for a 2.7x longer prompt.
FACTS = (
    "1 km = 1000 m; 1 m = 100 cm; 1 mile = 1609.344 m; 1 yard = 3 ft; 1 ft = 12 in; 1 in = 2.54 cm; "
    "1 kg = 1000 g; 1 lb = 0.4536 kg; 1 lb = 16 oz; 1 oz = 28.35 g; "
    "1 hour = 60 minute; 1 minute = 60 second; 1 day = 24 hour; 1 week = 7 day; "
    "1 L = 1000 mL; 1 m^3 = 1000 L; 1 gal = 3.785 L; 1 gal = 4 qt; 1 qt = 2 pt; 1 cup = 8 fl oz; "
    "1 fl oz = 29.57 mL; 1 tbsp = 3 tsp; "
    "1 m/s = 3.6 km/h; 1 mph = 1.609 km/h; 1 knot = 1.852 km/h; 1 ft/s = 0.3048 m/s; "
    "1 atm = 101325 Pa; 1 bar = 100000 Pa; 1 psi = 6895 Pa; 1 kPa = 1000 Pa; 1 cal = 4.184 J; 1 kWh = 3600000 J; "
    "1 byte = 8 bit; 1 KB = 1000 B; 1 MB = 1000 KB; 1 GB = 1000 MB; 1 TB = 1000 GB; 1 KiB = 1024 B; "
    "1 acre = 43560 sq ft; 1 hectare = 10000 m^2."
)

SYSTEM = (
    f"You convert units. Useful facts: {FACTS} "
    "Reply in one line: state the conversion factor, multiply, and give the number in <answer></answer> tags."
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


QUESTION_FIELD = "{question}"
DEFAULT_PROMPT_TEMPLATE = QUESTION_FIELD  # the raw question, as the course's template trains it


def check_prompt_template(template: str) -> str:
    """The template itself, or a RanksweepError when it does not hold `{question}` exactly once."""
    count = template.count(QUESTION_FIELD)
    if count != 1:
        found = "does not contain" if count == 0 else f"contains {count} times"
        raise RanksweepError(
            f"Prompt template {template!r} {found} {QUESTION_FIELD}: write the text your code feeds the model "
            "with {question} where the question goes, e.g. '{question} '."
        )
    return template


def render_prompt(template: str, question: str) -> str:
    """The text the model sees for `question`. Plain replacement, not str.format, so a template may hold
    other braces (a chat transcript, JSON) without escaping them."""
    return check_prompt_template(template).replace(QUESTION_FIELD, question)


def templated(examples: list, template: str) -> list:
    """Training examples (anything with `prompt` and `completion`) with each prompt put through `template`;
    the default template returns the list unchanged."""
    check_prompt_template(template)
    if template == DEFAULT_PROMPT_TEMPLATE:
        return list(examples)
    return [replace(e, prompt=render_prompt(template, e.prompt)) for e in examples]


def read_adapter_template(adapter_dir) -> str | None:
    """The prompt template recorded in an adapter folder's ranksweep.json at training, or None."""
    meta = Path(adapter_dir) / "ranksweep.json"
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get("prompt_template")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
