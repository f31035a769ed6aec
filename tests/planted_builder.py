"""A pair builder that makes no model, for the fast floor's tests of the study loop.

It implements sweep.builder.PairBuilder like ranksweep's own trainer, but plants each adapter's grade instead of
training and grading it: accuracy rises with rank (so the best pair that fits the budget is known in advance), the
answer NLL falls with it, sizes are the exact raw bytes sweep.sizing predicts and a zip of 0.92 of them (deflate on
trained fp32 LoRA weights, docs/benchmarks.md §5). Everything around it is real: the CLI, the Optuna storage, the
sampler, the records, the report. Loop logic only: whatever a real adapter does is the integration floor's.
"""

from __future__ import annotations

import hashlib
import math

from sweep.builder import PairOutcome
from sweep.records import AdapterResult, Pair
from sweep.sizing import adapter_size, config_for
from trainers.grading import points, wilson_interval

QUESTIONS = 100
ZIP_RATIO = 0.92


def planted_accuracy(kind: str, rank: int) -> float:
    """Accuracy rising with log2(rank): SFT 0.40 at rank 1 to 0.64 at rank 64, RFT 0.55 to 0.79."""
    start = 0.40 if kind == "sft" else 0.55
    return round(start + 0.04 * math.log2(rank), 2)


class PlantedBuilder:
    """A PairBuilder whose adapters are planted, never trained; `built` lists every pair it was asked for."""

    def __init__(self, base_model: str, *, fail: tuple[Pair | tuple[int, int], ...] = (), stop: Exception | None = None):
        self.model_config = config_for(base_model)
        self.fail = fail  # pairs (or (sft_rank, rft_rank)) whose build raises, as a trial that runs out of memory
        self.stop = stop  # raised on the first build: an error the user must fix
        self.built: list[Pair] = []

    def adapter(self, kind: str, pair: Pair) -> AdapterResult:
        rank = pair.rank(kind)
        size = adapter_size(self.model_config, rank, pair.adapter_dtype)
        accuracy = planted_accuracy(kind, rank)
        correct = round(accuracy * QUESTIONS)
        low, high = wilson_interval(correct, QUESTIONS)
        key = f"{kind}-r{rank}-" + hashlib.sha256(repr((kind, pair)).encode()).hexdigest()[:10]
        return AdapterResult(
            kind=kind, rank=rank, alpha=pair.alpha_ratio * rank, lr=pair.lr, epochs=pair.epochs,
            dtype=pair.adapter_dtype, accuracy=accuracy, key=key, dir=f"/planted/{key}", params=size.params,
            raw_bytes_predicted=size.raw_bytes, raw_bytes=size.raw_bytes, zip_bytes=int(ZIP_RATIO * size.raw_bytes),
            ci_low=low, ci_high=high, answer_rate=1.0, questions=QUESTIONS, points=points(kind, accuracy),
            points_low=points(kind, low), points_high=points(kind, high),
            answer_nll=round(1.5 - accuracy, 4), answer_nll_se=0.03,
        )

    def build(self, pair: Pair) -> PairOutcome:
        self.built.append(pair)
        if self.stop is not None:
            raise self.stop
        if pair in self.fail or (pair.sft_rank, pair.rft_rank) in self.fail:
            raise MemoryError(f"planted failure of sft={pair.sft_rank}/rft={pair.rft_rank}")
        return PairOutcome(sft=self.adapter("sft", pair), rft=self.adapter("rft", pair), device="cpu")
