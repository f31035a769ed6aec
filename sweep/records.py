"""The typed records a study stores per trial: one `AdapterResult` per adapter, one `TrialResult` per pair.

These two classes are the only code that spells a trial attr's key: the loop writes `to_attrs()`,
`status`, `report`, the progress bar and the tests read `from_attrs()`. Keys are flat JSON scalars
(`sft_rank`, `rft_accuracy`, ...) so that optuna-dashboard and studies made by earlier versions read the
same way; a key an older study lacks reads as the field's default. `reports` reads studies through this
module; it imports nothing heavy (trainers' modules load torch inside their functions).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from trainers.training import KINDS
INTERRUPTED = "interrupted"  # how an `error` starts when the trial's process was stopped, not the trial itself


@dataclass(frozen=True)
class Pair:
    """What a trial asks for: its six Optuna params (ranks, lora_alpha/rank, learning rate, epochs, dtype)."""

    sft_rank: int
    rft_rank: int
    alpha_ratio: float
    lr: float
    epochs: float
    adapter_dtype: str  # "fp32" | "fp16", how both adapters are stored

    def rank(self, kind: str) -> int:
        """The rank of the adapter of `kind`."""
        return self.sft_rank if kind == "sft" else self.rft_rank

    def params(self) -> dict[str, Any]:
        """The Optuna params, in PARAMS order."""
        return {k: getattr(self, k) for k in PARAMS}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Pair:
        return cls(**{k: params[k] for k in PARAMS})


# The Optuna params of a trial, in the order a pair is spelled.
PARAMS = tuple(f.name for f in fields(Pair))


def pair_of(params: dict) -> tuple:
    """A pair's identity: the six param values, in PARAMS order (None where a param is missing)."""
    return tuple(params.get(k) for k in PARAMS)


def _from(cls, values: dict[str, Any]):
    """`cls` from the values present; absent optional fields keep their defaults."""
    known = {}
    for f in fields(cls):
        if f.name in values and values[f.name] is not None:
            known[f.name] = values[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            return None  # a required field is missing: not a record of this kind
    return cls(**known)


@dataclass(frozen=True)
class AdapterResult:
    """One graded adapter of a trial: hyperparameters, sizes (bytes), grade (fractions), cost (seconds)."""

    kind: str  # "sft" | "rft"
    rank: int
    alpha: float
    lr: float
    epochs: float
    dtype: str  # "fp32" | "fp16", how adapter_model.safetensors is stored
    accuracy: float
    key: str  # artifact-cache key
    dir: str  # the adapter folder
    params: int = 0  # LoRA parameters
    raw_bytes_predicted: int = 0
    raw_bytes: int = 0
    zip_bytes: int | None = None  # the folder deflated alone, under its submission arcnames
    ci_low: float | None = None  # Wilson 95% bounds of accuracy
    ci_high: float | None = None
    answer_rate: float | None = None
    questions: int | None = None
    points: float = 0.0  # homework points at `accuracy`
    points_low: float | None = None  # homework points at ci_low / ci_high (the report's range)
    points_high: float | None = None
    answer_nll: float | None = None  # mean negative log-likelihood of the true answer (nats), lower is better
    answer_nll_se: float | None = None
    train_seconds: float = 0.0  # 0 when reused from the cache; a derived adapter's: its parent's, when trained here
    derive_seconds: float = 0.0  # a derived adapter's cut (and recovery steps), 0 when reused or trained
    grade_seconds: float = 0.0
    cache_hit: bool = False
    origin: str = "trained"  # "trained", or how it was derived from the adapter `parent_key`
    parent_key: str | None = None

    def to_attrs(self) -> dict[str, Any]:
        """Trial user attrs, keys prefixed with the kind (`sft_rank`); None values are left out."""
        return {f"{self.kind}_{k}": v for k, v in asdict(self).items() if k != "kind" and v is not None}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], kind: str) -> AdapterResult | None:
        """The adapter of `kind` recorded in a trial's attrs, or None when it was not graded there."""
        prefix = f"{kind}_"
        values = {k[len(prefix):]: v for k, v in attrs.items() if k.startswith(prefix)}
        values.setdefault("dtype", attrs.get("adapter_dtype"))  # studies before per-adapter dtypes
        values["kind"] = kind
        return _from(cls, values)


@dataclass(frozen=True)
class TrialResult:
    """One trial: the pair it asked for, how it ended, and its two adapters when both were graded.

    `skipped` says why a pair was not trained (`over-budget`, `duplicate`, `running-elsewhere`, `target-reached`); `error` why a
    trial failed. Sizes are bytes of the zipped submission; `score` is the objective the study maximises.
    """

    sft_rank: int | None = None
    rft_rank: int | None = None
    alpha_ratio: float | None = None
    lr: float | None = None
    epochs: float | None = None
    adapter_dtype: str | None = None
    budget_bytes: int | None = None
    size_bytes_predicted: int | None = None
    size_bytes: int | None = None  # measured
    feasible: bool | None = None  # size (measured, else predicted) <= budget_bytes when it ran
    points: float | None = None
    mean_accuracy: float | None = None
    score: float | None = None
    device: str | None = None
    trial_seconds: float | None = None
    sampler_seed: int | None = None  # the seed of the process that drew this pair
    host: str | None = None
    pid: int | None = None
    pid_started: int | None = None  # when that process started (clock ticks since boot): a reused pid differs
    skipped: str | None = None
    error: str | None = None
    # Cache keys ("sft:KEY,rft:KEY") of the adapters this trial trained / derived and sealed into the cache, written
    # as each one is sealed: a trial killed before its end keeps the count of what it cost.
    trained: str | None = None
    derived: str | None = None
    sft: AdapterResult | None = field(default=None)
    rft: AdapterResult | None = field(default=None)

    @property
    def size(self) -> int | None:
        """The zipped size that counts for this trial (bytes): measured, else predicted."""
        return self.size_bytes if self.size_bytes is not None else self.size_bytes_predicted

    @property
    def pair(self) -> tuple:
        return pair_of({k: getattr(self, k) for k in PARAMS})

    def adapters(self) -> list[AdapterResult]:
        return [a for a in (self.sft, self.rft) if a is not None]

    def sealed(self, which: str) -> list[tuple[str, str]]:
        """(kind, cache key) of each adapter this trial `trained` or `derived` (the attr named), in order."""
        text = getattr(self, which) or ""
        return [tuple(item.split(":", 1)) for item in text.split(",") if ":" in item]

    def to_attrs(self) -> dict[str, Any]:
        """Trial user attrs: the pair-level fields, then each adapter's; None values are left out."""
        attrs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in KINDS}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        for adapter in self.adapters():
            attrs.update(adapter.to_attrs())
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], params: dict[str, Any] | None = None) -> TrialResult:
        """A trial's record from its user attrs; `params` (the Optuna params) fill the pair of trials that
        stopped before writing it. Unknown keys are ignored, missing ones default."""
        values = {**(params or {}), **{k: v for k, v in attrs.items() if k in _TRIAL_FIELDS}}
        adapters = {kind: AdapterResult.from_attrs(attrs, kind) for kind in KINDS}
        return cls(**{k: v for k, v in values.items() if k in _TRIAL_FIELDS}, **adapters)

    @classmethod
    def from_trial(cls, trial) -> TrialResult:
        """From an Optuna FrozenTrial. A FAIL trial without an `error` was failed because its process stopped: gone
        from this host (sweep.study.fail_orphaned_trials) or silent past Optuna's heartbeat grace period."""
        result = cls.from_attrs(trial.user_attrs, trial.params)
        if trial.state.name == "FAIL" and result.error is None:
            result = replace(result, error=f"{INTERRUPTED}: its process stopped (killed, or its machine went down)")
        return result


_TRIAL_FIELDS = {f.name for f in fields(TrialResult)} - set(KINDS)
