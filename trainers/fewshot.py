"""Few-shot chat prompts for rejection sampling, one per kind of data: the homework-like one of
trainers/prompts.py, and a short one for the `metric-prefix` level.

A prompt's length sets the cost of every decode step (each sampled token attends over it), so the
metric-prefix prompt carries only the prefix table the questions need, not the homework's 40 facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from trainers import prompts
from trainers.errors import RanksweepError


@dataclass(frozen=True)
class FewShot:
    """A system instruction and worked (question, reasoning) examples shown as past chat turns."""

    system: str
    examples: tuple[tuple[str, str], ...]

    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages: the instruction, the examples as past turns, then `question`."""
        messages = [{"role": "system", "content": self.system}]
        for example_question, reasoning in self.examples:
            messages.append({"role": "user", "content": example_question})
            messages.append({"role": "assistant", "content": reasoning})
        messages.append({"role": "user", "content": question})
        return messages

    def render(self, tokenizer, question: str) -> str:
        """The prompt as text, by the tokenizer's chat template, ready for the assistant's turn."""
        if not getattr(tokenizer, "chat_template", None):
            # Base (non-instruct) models have no template: a plain transcript keeps the same pattern.
            lines = [self.system, ""]
            for example_question, reasoning in self.examples:
                lines += [f"Question: {example_question}", f"Answer: {reasoning}", ""]
            return "\n".join(lines + [f"Question: {question}", "Answer:"])
        return tokenizer.apply_chat_template(self.messages(question), tokenize=False, add_generation_prompt=True)

    def fingerprint(self) -> str:
        """A short hash of the content, so cached RFT data is regenerated when the prompt changes."""
        return hashlib.sha256(json.dumps([self.system, self.examples]).encode("utf-8")).hexdigest()[:12]


# Every example has the same beats (the factor as `1 A = F B`, one multiplication, the tag): a small
# model copies the shape of its examples. Two of four go from a larger unit to a smaller one, as most
# questions of the level do; one divides, so a chain for "milliliters to liters" has a pattern to copy.
METRIC_PREFIX = FewShot(
    system=(
        "You convert between metric prefixes. giga = 1000000000, mega = 1000000, kilo = 1000, "
        "centi = 0.01, milli = 0.001, micro = 0.000001. "
        "Reply in one line: state the conversion factor, multiply, and give the number in <answer></answer> tags."
    ),
    examples=(
        ("Convert 7 kilograms to grams.", "1 kilogram = 1000 grams. 7 * 1000 = 7000. <answer>7000</answer>"),
        ("How many centimeters are in 3 meters?",
         "1 meter = 100 centimeters. 3 * 100 = 300. <answer>300</answer>"),
        ("What is 45 megabytes in kilobytes?",
         "1 megabyte = 1000 kilobytes. 45 * 1000 = 45000. <answer>45000</answer>"),
        ("If you have 250 milliseconds, how many seconds is that?",
         "1 millisecond = 0.001 seconds. 250 * 0.001 = 0.25. <answer>0.25</answer>"),
    ),
)

HOMEWORK = FewShot(system=prompts.SYSTEM, examples=tuple(prompts.WORKED_EXAMPLES))

FEW_SHOTS: dict[str, FewShot] = {"homework": HOMEWORK, "metric-prefix": METRIC_PREFIX}


def few_shot_named(name: str) -> FewShot:
    """The few-shot prompt called `name` (named like the data levels); a RanksweepError otherwise."""
    if name not in FEW_SHOTS:
        raise RanksweepError(f"Unknown few-shot prompt '{name}': choose one of {', '.join(FEW_SHOTS)}.")
    return FEW_SHOTS[name]
