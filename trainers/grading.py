"""The homework's grading rule: parse `<answer>…</answer>`, compare within 5%, score accuracy and points.

A numeric answer is correct when, after rounding it and the truth to 3 decimals,
|answer − truth| < 0.05·|truth|, or < 0.001 when the truth is 0.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from trainers.batching import SEPARATOR, tokenize_rows
from trainers.data import QA, parse_json
from trainers.errors import RanksweepError
from trainers.generation import core_model, eval_mode, greedy
from trainers.training import KINDS, format_answer, head_is_plain
from trainers.outcomes import QuestionOutcome, outcomes_from_json, outcomes_to_json, question_hash

RELATIVE_TOLERANCE = 0.05
ZERO_TOLERANCE = 0.001
# Greedy token budgets: an SFT model answers at once, an RFT model writes a reasoning chain first.
MAX_NEW_TOKENS = {"sft": 32, "rft": 128}
# Questions answered together. bench/grading_throughput.py: 48 questions in one batch of 64 took 9.1 s,
# in batches of 32 + 16 10.3 s.
BATCH_SIZE = 64

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_answer(text: str) -> float | None:
    """The number inside the first `<answer>…</answer>`; thousands commas and spaces are ignored. None if absent."""
    match = _ANSWER.search(text)
    if match is None:
        return None
    cleaned = re.sub(r"[,\s]", "", match.group(1))
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


OPEN, CLOSE = "<answer>", "</answer>"


def answer_is_hopeless(text: str) -> bool:
    """True when `text`, a completion so far, has opened `<answer>` and written after it a character that no
    continuation can turn into a number `parse_answer` accepts (a unit, a word): its grade is already decided,
    so a decoder may stop it there. Looks at the last `<answer>` only, which can only miss a hopeless text."""
    at = text.rfind(OPEN)
    if at < 0:
        return False
    tail = text[at + len(OPEN):]
    if CLOSE in tail:
        return False
    for n in range(min(len(CLOSE), len(tail)), 0, -1):  # a closing tag being written is not a character of the number
        if CLOSE.startswith(tail[-n:]):
            tail = tail[:-n]
            break
    return not all(c.isdigit() or c.isspace() or c in ".,+-eE_" for c in tail)


def is_correct(answer: float | None, truth: float) -> bool:
    """The homework rule: within 5% of the truth after rounding both to 3 decimals (0.001 absolute at 0)."""
    if answer is None:
        return False
    answer, truth = round(answer, 3), round(truth, 3)
    tolerance = RELATIVE_TOLERANCE * abs(truth) if truth != 0 else ZERO_TOLERANCE
    return abs(answer - truth) < tolerance


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion correct/n; (0, 1) when n is 0. Fractions, not percent."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# The homework's points rule, per kind: bands of (accuracy where the band starts, its width, the points it gives
# when full), each linear in between. SFT: 0 at 40% rising to 25 at 60%; RFT: 0 at 60% rising to 25 at 70%, plus
# up to 5 extra credit by 80%. The first band is the main case, the one a grader's points can be read back from.
POINT_BANDS = {"sft": ((0.4, 0.2, 25),), "rft": ((0.6, 0.1, 25), (0.7, 0.1, 5))}


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _bands(kind: str) -> tuple:
    if kind not in POINT_BANDS:
        raise RanksweepError(f"Unknown adapter kind '{kind}': use 'sft' or 'rft'.")
    return POINT_BANDS[kind]


def points(kind: str, acc: float) -> float:
    """Homework points for an adapter of this kind ('sft' or 'rft') at accuracy `acc` (a fraction)."""
    return sum(full * _clip01((acc - start) / width) for start, width, full in _bands(kind))


def sft_points(acc: float) -> float:
    """Homework points for an SFT adapter at accuracy `acc` (a fraction)."""
    return points("sft", acc)


def rft_points(acc: float) -> float:
    """Homework points for an RFT adapter at accuracy `acc` (a fraction), extra credit included."""
    return points("rft", acc)


def accuracy_for_points(kind: str, main_points: float) -> float:
    """The accuracy (fraction) at which the main case gives `main_points`: the rule's inverse. At 0 or full
    points the rule only bounds the accuracy, and the bound is returned (SFT 40%/60%, RFT 60%/70%)."""
    start, width, full = _bands(kind)[0]
    return start + width * min(max(main_points, 0.0), full) / full


def point_marks(kind: str) -> list[tuple[float, float]]:
    """(accuracy, points) where the rule's bands start and fill: [(0.4, 0), (0.6, 25)] for SFT."""
    bands = _bands(kind)
    marks, total = [(bands[0][0], 0.0)], 0.0
    for start, width, full in bands:
        total += full
        marks.append((start + width, total))
    return marks


@dataclass(frozen=True)
class Grade:
    """One adapter's grade: fractions for accuracy/answer rate/Wilson 95% bounds, counts, points, wall seconds."""

    kind: str
    accuracy: float
    answer_rate: float
    ci_low: float
    ci_high: float
    questions: int
    correct: int
    parsed: int
    points: float
    seconds: float
    # Mean negative log-likelihood per token of the true completion `<answer>value</answer>` after the
    # question (nats), averaged over questions, and its standard error; None where not measured.
    answer_nll: float | None = None
    answer_nll_se: float | None = None
    # One outcome per question asked (trainers/outcomes.py); None in grades written before they were kept.
    outcomes: tuple[QuestionOutcome, ...] | None = None

    def to_json(self) -> dict:
        """All fields as a JSON-ready dict (outcomes as a list of short-keyed rows)."""
        values = asdict(replace(self, outcomes=None))
        values["outcomes"] = outcomes_to_json(self.outcomes)
        return values

    @classmethod
    def from_json(cls, values: dict) -> Grade:
        """A grade read back from `to_json`'s dict; keys it lacks (older grades) keep their defaults."""
        known = {f.name for f in fields(cls)} - {"outcomes"}
        return cls(**{k: v for k, v in values.items() if k in known},
                   outcomes=outcomes_from_json(values.get("outcomes")))


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """Mean of `values` and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def answer_nll(
    model, tokenizer, rows: list[QA], *, contexts: list[str] | None = None, batch_size: int = BATCH_SIZE
) -> tuple[float, float]:
    """Mean NLL per token (nats) of each row's true answer, teacher-forced, and its standard error over rows
    (`answer_nlls` averaged)."""
    return mean_and_standard_error(answer_nlls(model, tokenizer, rows, contexts=contexts, batch_size=batch_size))


def answer_nlls(
    model, tokenizer, rows: list[QA], *, contexts: list[str] | None = None, batch_size: int = BATCH_SIZE
) -> list[float]:
    """The NLL per token (nats) of each row's true answer, teacher-forced, one value per row.

    The scored text is the SFT target `<answer>value</answer>`. Without `contexts` it follows the question
    directly, tokenized exactly as training tokenizes it (trainers.batching). With `contexts` (one per row:
    the text a model wrote before its `<answer>`, such as an RFT adapter's own reasoning) it follows the
    question and that text, and only the answer's tokens are scored. EOS is not scored. Unlike accuracy it
    moves with every small gain in the model's belief in the right number, so it separates adapters whose
    accuracies tie.
    """
    import torch

    answers = [format_answer(r.answer) for r in rows]
    if contexts is None or not any(c.strip() for c in contexts):
        token_rows, _ = tokenize_rows(tokenizer, [(r.question, a) for r, a in zip(rows, answers)], 10**9)
        scored = [(list(t.ids[:-1]), t.prompt_tokens) for t in token_rows]  # (ids without EOS, first scored)
    else:
        if len(contexts) != len(rows):
            raise ValueError(f"{len(contexts)} contexts for {len(rows)} rows")
        scored = []
        prompts = tokenizer([r.question for r in rows], add_special_tokens=True)["input_ids"]
        for prompt, context, answer in zip(prompts, contexts, answers):
            context = context.strip()
            # The reasoning follows the question as in RFT training; the answer tag follows it after a space.
            lead = tokenizer(SEPARATOR + context, add_special_tokens=False)["input_ids"] if context else []
            tail = tokenizer((" " if context else SEPARATOR) + answer, add_special_tokens=False)["input_ids"]
            scored.append(([*prompt, *lead, *tail], len(prompt) + len(lead)))
    per_row: list[float] = []
    core = core_model(model)
    decoder, head = core.get_decoder(), core.get_output_embeddings()
    # Only the answer positions reach the LM head (a 49k-wide softmax over every prompt token cost as much
    # as generating the answers); models whose logits are more than head(hidden) take the full forward.
    head_only = decoder is not core and head is not None and head_is_plain(core)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode(), eval_mode(model):
        for start in range(0, len(scored), batch_size):
            chunk = scored[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([row + [pad] * (width - len(row)) for row, _ in chunk])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row, _ in chunk])
            # Position t predicts token t + 1: the scored tokens are predicted from `first - 1` on.
            spans = [(n, first - 1, len(row) - 1) for n, (row, first) in enumerate(chunk)]
            targets = torch.tensor([t for row, first in chunk for t in row[first:]])
            if head_only:
                hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = head(torch.cat([hidden[n, a:b] for n, a, b in spans]))
            else:
                full = core(input_ids=ids, attention_mask=mask).logits
                logits = torch.cat([full[n, a:b] for n, a, b in spans])
            picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            for piece in picked.split([b - a for _, a, b in spans]):
                per_row.append(-piece.mean().item())
    return per_row


def score(kind: str, completions: list[str], truths: list[float], seconds: float = 0.0, *,
          questions: list[str] | None = None, nlls: list[float] | None = None, first_index: int = 0) -> Grade:
    """Grade completions against their true answers (pure: no model). With the `questions` asked (and their
    answer `nlls`), the grade keeps one outcome per question, indexed from `first_index`."""
    if len(completions) != len(truths):
        raise ValueError(f"{len(completions)} completions for {len(truths)} answers")
    answers = [parse_answer(text) for text in completions]
    right = [is_correct(a, t) for a, t in zip(answers, truths)]
    parsed = sum(a is not None for a in answers)
    correct = sum(right)
    outcomes = None
    if questions is not None:
        per_nll = nlls if nlls is not None else [None] * len(questions)
        outcomes = tuple(QuestionOutcome(first_index + n, question_hash(q), a is not None, r, nll)
                         for n, (q, a, r, nll) in enumerate(zip(questions, answers, right, per_nll)))
    asked = len(completions)
    accuracy = correct / asked if asked else 0.0
    low, high = wilson_interval(correct, asked)
    return Grade(
        kind=kind,
        accuracy=accuracy,
        answer_rate=parsed / asked if asked else 0.0,
        ci_low=low,
        ci_high=high,
        questions=asked,
        correct=correct,
        parsed=parsed,
        points=points(kind, accuracy),
        seconds=seconds,
        outcomes=outcomes,
    )


def read_adapter_kind(adapter_dir: str | Path) -> str | None:
    """The `kind` recorded in an adapter folder's ranksweep.json, or None when there is no such file or key."""
    meta = Path(adapter_dir) / "ranksweep.json"
    if not meta.is_file():
        return None
    try:
        kind = parse_json(meta.read_bytes()).get("kind")
    except (ValueError, AttributeError):  # bad JSON, a 5000-digit number, deep nesting, not an object
        raise RanksweepError(f"'{meta}' is not a JSON object; delete it or pass --kind.") from None
    return kind if isinstance(kind, str) else None


def grade_model(
    loaded,
    rows: list[QA],
    *,
    kind: str,
    adapter_dir: str | Path | None = None,
    questions: int | None = 100,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    max_new_tokens: int | None = None,
    first_index: int = 0,
    stop_hopeless: bool = True,
) -> Grade:
    """Greedy-answer the first `questions` rows (None = all) with the base model plus an optional adapter.

    The grade keeps each question's outcome, indexed from `first_index` (where `rows` starts in the
    validation file: the decision phase grades later slices of it).

    The adapter is loaded into `loaded.model` for the duration and removed afterwards, leaving the base
    model as it was. Also measures the answer NLL (`answer_nll`; for an RFT adapter, after its own greedy
    reasoning). `seconds` is the wall time of both. `stop_hopeless`: a row stops at the first token its
    answer cannot survive (answer_is_hopeless; same grade, less decoding); False decodes every row to its end.
    """
    from tqdm.auto import tqdm

    if kind not in KINDS:
        raise RanksweepError(f"Unknown adapter kind '{kind}': use 'sft' or 'rft'.")
    asked = rows if questions is None else rows[:questions]
    if not asked:
        raise RanksweepError("There are no questions to grade: the validation data is empty.")
    prompts = [row.question for row in asked]
    truths = [row.answer for row in asked]
    budget = max_new_tokens or MAX_NEW_TOKENS[kind]
    with tqdm(total=len(asked), desc=f"grading {kind}", unit="q", disable=not progress, leave=False) as bar:
        correct = 0

        def advance(indices, completions):
            nonlocal correct
            correct += sum(is_correct(parse_answer(c), truths[i]) for i, c in zip(indices, completions))
            bar.update(len(indices))
            bar.set_postfix(correct=correct)

        start = time.perf_counter()
        with _attached_adapter(loaded.model, adapter_dir) as model:
            # A row whose answer can no longer parse is graded wrong whatever follows: it stops there.
            completions = greedy(model, loaded.tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size,
                                 give_up=answer_is_hopeless if stop_hopeless else None, on_batch=advance)
            # An RFT adapter writes its reasoning first: its answer is scored after its own greedy chain.
            contexts = [_before_answer(c) for c in completions] if kind == "rft" else None
            nlls = answer_nlls(model, loaded.tokenizer, asked, contexts=contexts, batch_size=batch_size)
        seconds = time.perf_counter() - start
    nll, nll_se = mean_and_standard_error(nlls)
    grade = score(kind, completions, truths, seconds=seconds, questions=prompts, nlls=nlls, first_index=first_index)
    return replace(grade, answer_nll=nll, answer_nll_se=nll_se)


def _before_answer(completion: str) -> str:
    """The text a completion wrote before its first `<answer>` (all of it when it has none)."""
    at = completion.find("<answer>")
    return completion if at < 0 else completion[:at]


@contextmanager
def _attached_adapter(model, adapter_dir: str | Path | None):
    """Yield `model` with the adapter in `adapter_dir` loaded (or as is when None), then strip it again.

    Loading injects LoRA layers into `model` itself; unloading swaps the original layers back, and the
    `peft_config` attribute PEFT leaves behind is removed so the next adapter does not stack onto it.
    """
    if adapter_dir is None:
        yield model
        return
    from peft import PeftModel

    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").is_file():
        raise RanksweepError(f"'{folder}' is not an adapter folder (no adapter_config.json): pass a trained adapter.")
    had_peft_config = hasattr(model, "peft_config")
    # Loading for inference freezes every parameter and switches to eval mode; both are put back after.
    state = (model.training, {name: p.requires_grad for name, p in model.named_parameters()})
    try:
        with warnings.catch_warnings():
            # PEFT trips transformers deprecation notices that say nothing to the user.
            warnings.simplefilter("ignore", FutureWarning)
            # The adapter in the base's dtype (peft would upcast it to float32): on a bf16 base each LoRA layer then
            # runs in bf16, with no cast of its input to float32 and back; the agreement with float32 grading was
            # measured this way (docs/benchmarks.md §11).
            peft_model = PeftModel.from_pretrained(model, folder, autocast_adapter_dtype=False)
    except Exception as exc:  # PEFT raises several types for a damaged or mismatched adapter
        _strip_lora(model, had_peft_config, state)
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RanksweepError(
            f"Adapter '{folder}' could not be loaded onto this base model ({type(exc).__name__}: {first_line}); "
            "check that --base-model is the model it was trained on."
        ) from None
    try:
        yield peft_model
    finally:
        peft_model.unload()
        _strip_lora(model, had_peft_config, state)


def _strip_lora(model, had_peft_config: bool, state: tuple[bool, dict[str, bool]]) -> None:
    """Undo what a (possibly failed) adapter load left on the base model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if not had_peft_config and hasattr(model, "peft_config"):
        del model.peft_config
    training, requires_grad = state
    for name, param in model.named_parameters():
        param.requires_grad_(requires_grad.get(name, param.requires_grad))
    model.train(training)
