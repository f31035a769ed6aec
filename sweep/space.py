"""The search space and the presets: which adapter pairs a study may try, and with which settings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from trainers.errors import RanksweepError
from trainers.training import ADAPTER_DTYPES, MAX_RANK, is_rank

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class SearchSpace:
    """Every choice a trial makes; a one-element tuple is a fixed setting, not a search dimension."""

    sft_ranks: tuple[int, ...] = DEFAULT_RANKS
    rft_ranks: tuple[int, ...] = DEFAULT_RANKS
    alpha_ratios: tuple[float, ...] = (4.0,)
    lrs: tuple[float, ...] = (1e-3,)
    epochs: tuple[float, ...] = (1.0,)
    adapter_dtypes: tuple[str, ...] = ("fp32",)

    def dimensions(self) -> dict[str, tuple]:
        """Optuna parameter name -> choices, in a stable order."""
        return {
            "sft_rank": self.sft_ranks,
            "rft_rank": self.rft_ranks,
            "alpha_ratio": self.alpha_ratios,
            "lr": self.lrs,
            "epochs": self.epochs,
            "adapter_dtype": self.adapter_dtypes,
        }

    def points(self) -> list[dict]:
        """Every combination of choices (the grid the sampler draws from)."""
        dims = self.dimensions()
        return [dict(zip(dims, values)) for values in itertools.product(*dims.values())]


@dataclass(frozen=True)
class Effort:
    """Training and grading effort per adapter; presets fill it, flags override single fields.
    (Not "budget": in ranksweep a budget is always bytes.)"""

    max_examples: int | None = None  # None: the whole training set
    questions: int | None = 100  # graded validation questions; None: all
    batch_size: int = 16
    rft_questions: int | None = None  # training questions offered to rejection sampling
    rft_samples: int = 10
    rft_temperature: float = 0.7
    rft_max_new_tokens: int = 128  # token budget of one sampled reasoning chain


@dataclass(frozen=True)
class Preset:
    space: SearchSpace
    effort: Effort
    trials: int
    level: str = "homework"  # the built-in data level (trainers/unitgen.py) when the user gives no data


PRESETS = {
    # A CPU-sized study on the level the 135M model learns (measured on 2 cores, docs/benchmarks.md §6, §9):
    # two ranks per kind, two epochs at lr 2e-3 (RFT adapters graded 22.5% after one epoch of their ~130
    # chains, 50.5% after two; on ~110 chains rank 2 graded 23% where rank 16 graded 43%, so RFT starts at 4),
    # 320 SFT rows, 200 graded questions (a 95% interval of about +-7 points at 50%); rejection sampling on
    # 200 questions, 4 chains of up to 64 tokens each (a chain of this level is ~40).
    "quick": Preset(
        space=SearchSpace(sft_ranks=(2, 16), rft_ranks=(4, 16), lrs=(2e-3,), epochs=(2.0,)),
        effort=Effort(max_examples=320, questions=200, rft_questions=200, rft_samples=4, rft_max_new_tokens=64),
        trials=4,
        level="metric-prefix",
    ),
    # Homework scale: the whole training set, graded on the homework's 100 questions.
    "full": Preset(
        space=SearchSpace(epochs=(3.0,)),
        effort=Effort(max_examples=None, questions=100, rft_questions=None, rft_samples=15),
        trials=16,
    ),
}


def describe(preset: Preset) -> str:
    """A preset in words, from its values (what `launch --help` shows): rows, epochs, questions, ranks."""
    def listed(values) -> str:
        return "/".join(f"{v:g}" for v in values)

    effort, space = preset.effort, preset.space
    rows = "all rows" if effort.max_examples is None else f"{effort.max_examples} training rows"
    questions = "all questions" if effort.questions is None else f"{effort.questions} questions"
    epochs = f"{listed(space.epochs)} epoch{'' if space.epochs == (1.0,) else 's'}"
    ranks = (f"ranks {listed(space.sft_ranks)}" if space.sft_ranks == space.rft_ranks
             else f"SFT ranks {listed(space.sft_ranks)}, RFT ranks {listed(space.rft_ranks)}")
    return f"{rows}, {epochs} at lr {listed(space.lrs)}, {questions}, {ranks}, {preset.trials} trials"


def parse_ranks(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); every rank a whole number from 1 to MAX_RANK."""
    ranks = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not is_rank(int(part)):
            raise RanksweepError(f"Rank list '{text}' must be whole numbers from 1 to {MAX_RANK} separated by "
                                 "commas.")
        ranks.append(int(part))
    return tuple(sorted(set(ranks)))


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """'1e-3,5e-4' -> (0.001, 0.0005); every value > 0."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise RanksweepError(f"{what} '{text}' must be numbers separated by commas.") from None
    if any(not v > 0 for v in values):
        raise RanksweepError(f"{what} '{text}' must all be greater than 0.")
    return values


def with_overrides(preset: Preset, **fields) -> Preset:
    """Apply the flags a user gave explicitly (None means 'not given') on top of a preset."""
    space_fields = {k: v for k, v in fields.items() if k in SearchSpace.__dataclass_fields__ and v is not None}
    effort_fields = {k: v for k, v in fields.items() if k in Effort.__dataclass_fields__ and v is not None}
    for dtype in space_fields.get("adapter_dtypes", ()):
        if dtype not in ADAPTER_DTYPES:
            raise RanksweepError(f"Adapter dtype '{dtype}' is not one of {', '.join(ADAPTER_DTYPES)}.")
    return replace(
        preset,
        space=replace(preset.space, **space_fields),
        effort=replace(preset.effort, **effort_fields),
        trials=fields.get("trials") or preset.trials,
    )
