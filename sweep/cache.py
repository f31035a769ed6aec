"""The artifact cache: one folder per distinct adapter, keyed by everything that determines it.

    <root>/adapters/<kind>-r<rank>-<key>/   adapter_model.safetensors, adapter_config.json,
                                            ranksweep.json, training_log.csv, manifest.json,
                                            grade-<key>.json (one per grading setting)
    <root>/locks/<key>.lock                 held while one process trains that adapter

An entry counts only once `manifest.json` exists and the hashes it lists match the files, so a
half-written or corrupted adapter is retrained, never trusted. Two workers that want the same
adapter serialise on its lock file: the second one finds the finished entry and reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import sys
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from trainers.data import file_sha256, write_json_atomic

if TYPE_CHECKING:
    from trainers.training import TrainConfig

# Bump when the trainer changes in a way that changes adapters, so old entries are not reused.
TRAINER_VERSION = 1
MANIFEST = "manifest.json"
HASHED_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class AdapterSpec:
    """Everything that determines a trained adapter's weights: its TrainConfig, the base model and the data.

    The cache key hashes every field of the TrainConfig, so a field added there (dropout, target modules,
    max length, ...) can never be left out of the key.
    """

    config: TrainConfig
    base_model: str
    data_sha256: str  # the training file: train.json for SFT, rft.json for RFT

    @property
    def key(self) -> str:
        blob = json.dumps({"config": asdict(self.config), "base_model": self.base_model,
                           "data_sha256": self.data_sha256, "trainer_version": TRAINER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def derived(self) -> bool:
        """Whether the adapter is computed from another one (sweep/strategies.py), not trained on its own."""
        return False

    @property
    def rank(self) -> int:
        return self.config.rank

    @property
    def alpha(self) -> float:
        return self.config.alpha


# Told of every entry sealed (trained or derived, here) inside `observe_seals`: the study loop records each on the
# running trial as it happens, so an adapter trained by a trial that is later killed still counts, whichever
# builder (and cache object) made it.
_seal_observer: ContextVar[Callable[[AdapterSpec], None] | None] = ContextVar("ranksweep_seal_observer", default=None)


@contextlib.contextmanager
def observe_seals(callback: Callable[[AdapterSpec], None]):
    """Call `callback(spec)` for each cache entry sealed in this context (this thread), right after its manifest."""
    token = _seal_observer.set(callback)
    try:
        yield
    finally:
        _seal_observer.reset(token)


@dataclass(frozen=True)
class Manifest:
    """A sealed entry's manifest.json: its files' hashes, the spec it was made from, and facts recorded when it
    was sealed (None where not recorded: entries of older versions, derivation parents)."""

    key: str
    hashes: dict[str, str]  # file name -> sha256, for HASHED_FILES
    spec: dict[str, Any]  # the TrainConfig's fields, base_model, data_sha256
    zip_bytes: int | None = None  # the folder deflated alone, under its submission arcnames
    train_seconds: float | None = None  # recorded by trainers that time their own command (homework mode)
    trainer: str | None = None  # who trained it, when not ranksweep

    def to_json(self) -> dict:
        facts = {k: v for k, v in (("zip_bytes", self.zip_bytes), ("train_seconds", self.train_seconds),
                                   ("trainer", self.trainer)) if v is not None}
        return {**self.hashes, **facts, "spec": self.spec, "key": self.key}

    @classmethod
    def from_json(cls, raw: dict) -> Manifest:
        """KeyError or TypeError when `raw` is not a manifest."""
        return cls(key=raw["key"], hashes={name: raw[name] for name in HASHED_FILES}, spec=raw["spec"],
                   zip_bytes=raw.get("zip_bytes"), train_seconds=raw.get("train_seconds"), trainer=raw.get("trainer"))


@dataclass(frozen=True)
class Entry:
    """A verified cache entry, and what this process spent making it (0 seconds when it was reused)."""

    manifest: Manifest
    seconds: float
    cache_hit: bool


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on a file, held for the duration of the with-block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ArtifactCache:
    """Adapters and their grades under one folder (shareable between workers on one file system)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def adapter_dir(self, spec: AdapterSpec) -> Path:
        return self.root / "adapters" / f"{spec.kind}-r{spec.rank}-{spec.key}"

    def lock(self, spec: AdapterSpec):
        """Hold an exclusive lock on one adapter's entry while it is checked, trained or graded."""
        return file_lock(self.root / "locks" / f"{spec.key}.lock")

    def verify(self, spec: AdapterSpec) -> Manifest | None:
        """The entry's manifest when the entry is complete and its files hash to what the manifest recorded.

        An entry that exists but does not verify is removed (with a warning) so that it is retrained.
        Each check hashes the adapter's files once: on the embedded model at rank 32 that is 40 MB.
        """
        folder = self.adapter_dir(spec)
        try:
            recorded = Manifest.from_json(json.loads((folder / MANIFEST).read_text()))
            if all(file_sha256(folder / name) == recorded.hashes[name] for name in HASHED_FILES):
                return recorded
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if folder.exists():
            print(f"ranksweep: warning: cached adapter {folder} is incomplete or corrupt; retraining it",
                  file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
        return None

    def seal(self, spec: AdapterSpec, **facts) -> Manifest:
        """Record the hashes of a freshly trained entry (and `facts` about it: Manifest's zip_bytes,
        train_seconds, trainer); until then it does not count as cached. Returns the manifest."""
        folder = self.adapter_dir(spec)
        manifest = Manifest(key=spec.key, hashes={name: file_sha256(folder / name) for name in HASHED_FILES},
                            spec={**asdict(spec.config), "base_model": spec.base_model,
                                  "data_sha256": spec.data_sha256}, **facts)
        write_json_atomic(folder / MANIFEST, manifest.to_json())
        observer = _seal_observer.get()
        if observer is not None:
            observer(spec)
        return manifest

    def ensure(self, spec: AdapterSpec, make: Callable[[Path], Any],
               facts: Callable[[Path], dict] | None = None) -> Entry:
        """The verified entry of `spec`. Under its lock: reuse it when it verifies, else `make(folder)` writes it
        (timed) and it is sealed with `facts(folder)` (untimed: zipping a 40 MB adapter takes a second)."""
        folder = self.adapter_dir(spec)
        with self.lock(spec):
            manifest = self.verify(spec)
            if manifest is not None:
                return Entry(manifest, 0.0, True)
            start = time.perf_counter()
            make(folder)
            seconds = time.perf_counter() - start
            return Entry(self.seal(spec, **(facts(folder) if facts else {})), seconds, False)

    def grade_path(self, spec: AdapterSpec, grading_key: str) -> Path:
        return self.adapter_dir(spec) / f"grade-{grading_key}.json"

    def load_grade(self, spec: AdapterSpec, grading_key: str) -> dict | None:
        path = self.grade_path(spec, grading_key)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def save_grade(self, spec: AdapterSpec, grading_key: str, grade: dict) -> None:
        write_json_atomic(self.grade_path(spec, grading_key), grade)
