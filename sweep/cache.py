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
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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

    def verify(self, spec: AdapterSpec) -> dict | None:
        """The entry's manifest when the entry is complete and its files hash to what the manifest recorded.

        An entry that exists but does not verify is removed (with a warning) so that it is retrained.
        Each check hashes the adapter's files once: on the embedded model at rank 32 that is 40 MB.
        """
        folder = self.adapter_dir(spec)
        try:
            recorded = json.loads((folder / MANIFEST).read_text())
            if all(file_sha256(folder / name) == recorded[name] for name in HASHED_FILES):
                return recorded
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if folder.exists():
            print(f"ranksweep: warning: cached adapter {folder} is incomplete or corrupt; retraining it",
                  file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
        return None

    def seal(self, spec: AdapterSpec, **facts) -> dict:
        """Record the hashes of a freshly trained entry (and `facts` about it, such as its zipped size);
        until then it does not count as cached. Returns the manifest."""
        folder = self.adapter_dir(spec)
        hashes = {name: file_sha256(folder / name) for name in HASHED_FILES}
        manifest = {**hashes, **facts, "spec": {**asdict(spec.config), "base_model": spec.base_model,
                                                    "data_sha256": spec.data_sha256}, "key": spec.key}
        write_json_atomic(folder / MANIFEST, manifest)
        observer = _seal_observer.get()
        if observer is not None:
            observer(spec)
        return manifest

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
