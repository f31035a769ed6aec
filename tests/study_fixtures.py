"""Writers of realistic ranksweep studies into a real Optuna storage, for tests that read studies.

Trials are made the way the study loop makes them (sweep/study.py, sweep/attempt.py): `ask` with the six
categorical params, the record (sweep.records.TrialResult.to_attrs) written once both adapters are graded,
the size constraint, `tell` with [score, zipped bytes]; pruned trials carry `skipped`,
`size_bytes_predicted` and the constraint, failed ones `error`, running ones only host/pid. Scores come
from the project's own objective (sweep.objective), pair sizes from sweep.bundle.combined_bytes. Sizes
follow the 360M model (542,720 LoRA parameters per rank, as sweep/sizing.py counts them; zip ratios as
docs/benchmarks.md §5 measured them), grades come from the real grader's Wilson interval and points. A study
is built in memory, then copied into the target storage with `optuna.copy_study`: one write per trial instead
of one per attr, so a test storage takes about a second per study instead of ten.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from sweep.bundle import combined_bytes
from sweep.objective import metric_names, objective_for, study_directions
from sweep.records import AdapterResult, TrialResult
from sweep.storage import mark_study
from trainers.grading import points, wilson_interval

MIB = 1024 * 1024
BUDGET_BYTES = 50 * MIB
REST_BYTES = 182_417  # zipped homework code and data without adapters
QUESTIONS = 100
PARAMS_PER_RANK = 542_720  # SmolLM2-360M, all-linear LoRA
HEADER_BYTES = 59_040  # safetensors header of a PEFT adapter file
ZIP_RATIO = {"fp32": 0.915, "fp16": 0.87}  # deflate barely shrinks trained weights
BYTES_PER_PARAM = {"fp32": 4, "fp16": 2}


@dataclass(frozen=True)
class TrialSpec:
    """One trial to write: the pair it asked for, how it ended, and (when graded) correct answers per 100."""

    sft_rank: int
    rft_rank: int
    sft_correct: int | None = None
    rft_correct: int | None = None
    outcome: str = "complete"  # complete | over-budget | duplicate | fail | running
    alpha_ratio: float = 4.0
    lr: float = 1e-3
    epochs: float = 1.0
    adapter_dtype: str = "fp32"
    budget_bytes: int | None = None  # the budget the trial ran under, when the study was resumed with another
    nll: bool = True  # False: graded before ranksweep recorded the answer NLL (an older study)


def adapter_key(kind: str, spec: TrialSpec) -> str:
    """The cache key the runner would give this adapter: same hyperparameters, same key."""
    rank = spec.sft_rank if kind == "sft" else spec.rft_rank
    blob = f"{kind}|{rank}|{spec.alpha_ratio}|{spec.lr}|{spec.epochs}|{spec.adapter_dtype}"
    return f"{kind}-r{rank}-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def raw_bytes(rank: int, dtype: str = "fp32") -> int:
    """adapter_model.safetensors bytes for a rank (exact, as sweep/sizing.py predicts)."""
    return BYTES_PER_PARAM[dtype] * PARAMS_PER_RANK * rank + HEADER_BYTES


def zip_bytes(kind: str, spec: TrialSpec) -> int:
    """Deflated bytes of one adapter folder: the ratio plus a key-dependent wobble of a few KB."""
    rank = spec.sft_rank if kind == "sft" else spec.rft_rank
    wobble = int(hashlib.sha256(adapter_key(kind, spec).encode()).hexdigest()[:4], 16) % 4096
    return int(raw_bytes(rank, spec.adapter_dtype) * ZIP_RATIO[spec.adapter_dtype]) + wobble


def answer_nll(kind: str, spec: TrialSpec, accuracy: float) -> tuple[float, float]:
    """(NLL per answer token in nats, its standard error) as a graded adapter records them: falling with
    accuracy and a little with rank, plus a key-dependent wobble under 0.003 nats; SE of 100 questions."""
    rank = spec.sft_rank if kind == "sft" else spec.rft_rank
    wobble = int(hashlib.sha256(adapter_key(kind, spec).encode()).hexdigest()[4:8], 16) % 3000 / 1e6
    return round(1.45 - 1.3 * accuracy - 0.02 * math.log2(rank) + wobble, 6), round(0.035 + 0.02 * (1 - accuracy), 6)


def predicted_bytes(spec: TrialSpec) -> int:
    """The runner's upper bound on the zipped submission: raw adapters plus the rest, never below measured."""
    return raw_bytes(spec.sft_rank, spec.adapter_dtype) + raw_bytes(spec.rft_rank, spec.adapter_dtype) + REST_BYTES


def measured_bytes(spec: TrialSpec) -> int:
    """The zipped submission as the runner measures it for a trained pair."""
    return combined_bytes(REST_BYTES, zip_bytes("sft", spec), zip_bytes("rft", spec))


def trial_result(spec: TrialSpec, budget: int, objective: str = "points", artifacts: str = "/cache") -> TrialResult:
    """The record of a completed trial, built as sweep/trial.py's record_pair builds it."""
    adapters = {}
    for kind, rank, correct in (("sft", spec.sft_rank, spec.sft_correct), ("rft", spec.rft_rank, spec.rft_correct)):
        acc = correct / QUESTIONS
        low, high = wilson_interval(correct, QUESTIONS)
        nll, nll_se = answer_nll(kind, spec, acc) if spec.nll else (None, None)
        adapters[kind] = AdapterResult(
            kind=kind, rank=rank, alpha=spec.alpha_ratio * rank, lr=spec.lr, epochs=spec.epochs,
            dtype=spec.adapter_dtype, accuracy=acc, key=adapter_key(kind, spec),
            dir=f"{artifacts}/adapters/{adapter_key(kind, spec)}", params=PARAMS_PER_RANK * rank,
            raw_bytes_predicted=raw_bytes(rank, spec.adapter_dtype), raw_bytes=raw_bytes(rank, spec.adapter_dtype),
            zip_bytes=zip_bytes(kind, spec), ci_low=low, ci_high=high, answer_rate=min(1.0, acc + 0.2),
            questions=QUESTIONS, points=points(kind, acc), points_low=points(kind, low), points_high=points(kind, high),
            answer_nll=nll, answer_nll_se=nll_se, train_seconds=41.5 * rank ** 0.3, grade_seconds=12.0,
        )
    sft, rft = adapters["sft"], adapters["rft"]
    size = measured_bytes(spec)
    run_budget = spec.budget_bytes or budget
    return TrialResult(
        sft_rank=spec.sft_rank, rft_rank=spec.rft_rank, alpha_ratio=spec.alpha_ratio, lr=spec.lr, epochs=spec.epochs,
        adapter_dtype=spec.adapter_dtype, budget_bytes=run_budget, size_bytes_predicted=predicted_bytes(spec),
        size_bytes=size, feasible=size <= run_budget, points=sft.points + rft.points,
        mean_accuracy=(sft.accuracy + rft.accuracy) / 2, score=objective_for(objective).value(sft, rft),
        device="cuda", host="gpu-box", pid=4242, sft=sft, rft=rft,
    )


def trial_attrs(spec: TrialSpec, budget: int) -> tuple[dict, float, int]:
    """A completed trial's user attrs, score and size (TrialResult.to_attrs of `trial_result`)."""
    result = trial_result(spec, budget)
    return result.to_attrs(), result.score, result.size_bytes


def config(budget: int = BUDGET_BYTES, objective: str = "points", artifacts: str = "/cache") -> dict:
    """A study config as `ranksweep launch` stores it."""
    return {
        "base_model": "HuggingFaceTB/SmolLM2-360M-Instruct", "train_sha256": "a" * 64, "valid_sha256": "b" * 64,
        "rft_sha256": None, "budget_bytes": budget, "objective": objective,
        "sft_ranks": [1, 2, 4, 8, 16, 32], "rft_ranks": [2, 4, 8, 16, 32], "alpha_ratios": [2.0, 4.0],
        "lrs": [1e-3], "epochs": [1.0], "adapter_dtypes": ["fp32"], "questions": QUESTIONS, "trials": 12,
        "seed": 0, "preset": "homework", "artifacts": artifacts, "homework": "/home/me/homework3",
        "homework_rest_bytes": REST_BYTES,
    }


def write_study(storage, name: str, specs: list[TrialSpec], *, budget: int = BUDGET_BYTES,
                objective: str = "points", artifacts: str = "/cache") -> str:
    """Write a study named `name` holding `specs` (in order) into `storage` (a URL or an Optuna storage,
    which saves reconnecting when writing several); returns the name."""
    import dataclasses

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    memory = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=name, storage=memory, directions=study_directions(objective))
    study.set_metric_names(metric_names(objective))
    study.set_user_attr("config", config(budget, objective, artifacts))
    mark_study(study)
    pairs = [{"sft_rank": s.sft_rank, "rft_rank": s.rft_rank, "alpha_ratio": s.alpha_ratio, "lr": s.lr,
              "epochs": s.epochs, "adapter_dtype": s.adapter_dtype} for s in specs]
    # Optuna wants one distribution per param for the whole study, as the runner's search space gives.
    distributions = {k: CategoricalDistribution(sorted({p[k] for p in pairs})) for k in pairs[0]} if pairs else {}
    cache_hits: set[str] = set()
    study_id = memory.get_study_id_from_name(name)
    for spec, params in zip(specs, pairs):
        study.enqueue_trial(params)
        trial = study.ask(distributions)
        trial.set_user_attr("host", "gpu-box")
        trial.set_user_attr("pid", 4242)
        trial_id = memory.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if spec.outcome in ("over-budget", "duplicate"):
            result = TrialResult(**params, skipped=spec.outcome, size_bytes_predicted=predicted_bytes(spec),
                                 budget_bytes=budget)
            for key, value in result.to_attrs().items():
                trial.set_user_attr(key, value)
            over = float(predicted_bytes(spec) - budget)
            trial.set_constraint("size", over)
            memory.set_trial_system_attr(trial_id, "constraints", [over])
            study.tell(trial, state=TrialState.PRUNED)
        elif spec.outcome == "fail":
            trial.set_user_attr("error", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
            study.tell(trial, state=TrialState.FAIL)
        elif spec.outcome == "complete":
            result = trial_result(spec, budget, objective, artifacts)
            hits = {kind: getattr(result, kind).key in cache_hits for kind in ("sft", "rft")}
            cache_hits.update(a.key for a in result.adapters())
            result = dataclasses.replace(result, sft=dataclasses.replace(result.sft, cache_hit=hits["sft"]),
                                         rft=dataclasses.replace(result.rft, cache_hit=hits["rft"]))
            for key, value in result.to_attrs().items():
                trial.set_user_attr(key, value)
            over = float(result.size_bytes - budget)
            trial.set_constraint("size", over)
            memory.set_trial_system_attr(trial_id, "constraints", [over])
            study.tell(trial, [result.score, result.size_bytes])
        elif spec.outcome != "running":  # a running trial is left open
            raise ValueError(f"unknown outcome {spec.outcome!r}")
    optuna.copy_study(from_study_name=name, from_storage=memory, to_storage=storage)
    return name


# Accuracy climbs with rank and flattens: SFT pays from 40% to 60%, RFT from 60% to 80%.
SWEEP = [
    TrialSpec(4, 8, 52, 66),
    TrialSpec(8, 16, 61, 72),  # 45.7 MiB: the best pair that fits 50 MiB
    TrialSpec(16, 16, outcome="over-budget"),
    TrialSpec(2, 4, 41, 58),
    TrialSpec(8, 8, 61, 66),  # the SFT adapter of trial 1 again (cache hit)
    TrialSpec(16, 8, outcome="fail"),
    TrialSpec(4, 16, 52, 72),
    TrialSpec(8, 16, outcome="duplicate"),
    TrialSpec(4, 32, 52, 74, budget_bytes=80 * MIB),  # run under an earlier, larger budget: infeasible now
    TrialSpec(8, 16, 58, 70, alpha_ratio=2.0),
    TrialSpec(1, 2, 30, 50),
    TrialSpec(2, 8, outcome="running"),
]


def write_sweep_study(storage, name: str = "sweep") -> str:
    """A study mid-way: 8 complete pairs (one infeasible now), pruned, failed and one running trial."""
    return write_study(storage, name, SWEEP)


def write_single_trial_study(storage, name: str = "single") -> str:
    """One complete trial."""
    return write_study(storage, name, [TrialSpec(8, 16, 61, 72)])


def write_unsampled_best_study(storage, name: str = "unsampled") -> str:
    """The best pair (SFT 8 with RFT 16) was never trained together: each adapter came from another trial."""
    return write_study(storage, name, [TrialSpec(8, 4, 61, 58), TrialSpec(4, 16, 52, 72), TrialSpec(2, 2, 41, 50)])


def write_infeasible_study(storage, name: str = "infeasible") -> str:
    """Graded pairs, none within the (resumed, smaller) 10 MiB budget."""
    specs = [TrialSpec(4, 8, 52, 66, budget_bytes=50 * MIB), TrialSpec(2, 4, 41, 58, budget_bytes=50 * MIB)]
    return write_study(storage, name, specs, budget=10 * MIB)


def write_ungraded_study(storage, name: str = "ungraded") -> str:
    """No graded trial: one pruned over budget, one failed, one running."""
    specs = [TrialSpec(32, 32, outcome="over-budget"), TrialSpec(8, 8, outcome="fail"),
             TrialSpec(4, 8, outcome="running")]
    return write_study(storage, name, specs)


def write_low_accuracy_study(storage, name: str = "low") -> str:
    """Every pair below the points thresholds (as on the small embedded model): 0 points throughout."""
    specs = [TrialSpec(1, 2, 10, 20), TrialSpec(2, 4, 15, 30), TrialSpec(4, 8, 12, 25)]
    return write_study(storage, name, specs)


def write_older_study(storage, name: str = "older") -> str:
    """A study graded before ranksweep recorded the answer NLL: no trial has `*_answer_nll`."""
    specs = [TrialSpec(4, 8, 52, 66, nll=False), TrialSpec(8, 16, 61, 72, nll=False), TrialSpec(2, 4, 41, 58, nll=False)]
    return write_study(storage, name, specs)


def write_mixed_nll_study(storage, name: str = "mixed") -> str:
    """An older study resumed by a ranksweep that records the NLL: its first two trials have none."""
    specs = [TrialSpec(4, 8, 52, 66, nll=False), TrialSpec(2, 4, 41, 58, nll=False), TrialSpec(8, 16, 61, 72)]
    return write_study(storage, name, specs)
