"""Turn prompt/completion pairs into token rows, a seeded batch schedule, and padded tensors.

A row is the prompt's tokens (as the generator tokenizes a prompt: with the tokenizer's special
tokens), then " " + the completion (its own leading whitespace dropped; no " " after a prompt that ends
in whitespace), then EOS. Only the completion
and EOS are labelled, so the model learns to answer and to stop, never to write questions. Rows longer
than `max_length` tokens are dropped rather than truncated: a cut row would teach a question or answer
that was never asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IGNORE = -100  # label value torch's cross_entropy skips
# Batches are formed inside chunks of this many batches, sorted by length: rows of similar length share
# a batch (little padding) while the chunk boundaries keep the order random from epoch to epoch.
CHUNK_BATCHES = 8
# The separator between a question and its completion, as in the homework's own formatting.
SEPARATOR = " "


@dataclass(frozen=True)
class TokenRow:
    """One training example as token ids; the first `prompt_tokens` ids are not trained."""

    ids: tuple[int, ...]
    prompt_tokens: int

    @property
    def labelled_tokens(self) -> int:
        """How many ids carry a label: the completion's tokens plus EOS."""
        return len(self.ids) - self.prompt_tokens


def tokenize_rows(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> tuple[list[TokenRow], int]:
    """Token rows for (prompt, completion) pairs and the number dropped for being longer than max_length."""
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    # A prompt that already ends in whitespace (a template such as "{question} ") is the exact text the
    # user's code feeds the model: the completion follows it directly rather than after a second space.
    completions = tokenizer([("" if p[-1:].isspace() else SEPARATOR) + c.lstrip() for p, c in pairs],
                            add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows, dropped = [], 0
    for prompt, completion in zip(prompts, completions):
        ids = (*prompt, *completion, eos)
        if len(ids) > max_length:
            dropped += 1
            continue
        rows.append(TokenRow(ids=ids, prompt_tokens=len(prompt)))
    return rows, dropped


def steps_for(rows: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps for `epochs` passes (fractional allowed) over `rows` rows; at least one."""
    return max(1, math.ceil(epochs * math.ceil(rows / batch_size)))


def epoch_batches(lengths: list[int], batch_size: int, generator) -> list[list[int]]:
    """One epoch's batches of row indices: shuffled, then grouped by length within chunks, in random order."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def schedule(lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The batches of a whole run, `steps` long: whole epochs back to back, the last one cut short."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    plan: list[list[int]] = []
    while len(plan) < steps:
        plan += epoch_batches(lengths, batch_size, generator)
    return plan[:steps]


@dataclass
class Batch:
    """Right-padded tensors for one step; labels are IGNORE on prompt and padding positions."""

    input_ids: object
    attention_mask: object
    labels: object

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def collate(rows: list[TokenRow], pad_id: int, pad_to: int | None = None) -> Batch:
    """Pad rows on the right to the longest one (or to `pad_to`, to measure what dynamic padding saves)."""
    import torch

    width = max(len(r.ids) for r in rows) if pad_to is None else pad_to
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        ids = torch.tensor(row.ids, dtype=torch.long)
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
        labels[i, row.prompt_tokens : len(ids)] = ids[row.prompt_tokens :]
    return Batch(input_ids, attention_mask, labels)
