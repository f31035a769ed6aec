"""Opening an Optuna storage by URL: the one place that does it, for the study loop and for the readers; and
telling a ranksweep study from any other study the storage holds (`ranksweep_config`).

The loop's storage carries Optuna's heartbeat (`heartbeat_interval`, `grace_period`): while a trial runs,
Optuna's own thread records a beat, and a RUNNING trial whose beat is older than the grace period is
failed by the next process that starts a trial, which re-enqueues its pair once
(`RetryHeartbeatStaleTrialCallback`). Readers open it without.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Callable, TYPE_CHECKING

from sweep.settings import StudyConfig
from trainers.errors import RanksweepError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

# A beat every 10 s costs one small write; a killed launch's trial is failed (and its pair re-enqueued) once
# its beat is 40 s old. RANKSWEEP_HEARTBEAT_SECONDS shortens both (the kill tests use 1 s).
HEARTBEAT_SECONDS = 10
GRACE_BEATS = 4
# Processes that open one brand-new SQLite file at once race to create its tables; a loser looks again.
SQLITE_CREATE_TRIES = 8


# A study ranksweep creates carries this user attr, {"version": MARKER_VERSION}; every command recognises its
# studies by it alone (not by the name of an attribute another tool could also use).
MARKER = "ranksweep"
MARKER_VERSION = 1
# Studies created before the marker (version 0): their `config` holds every key the first ranksweep wrote. Such a
# study is read as before, and `launch` writes the marker when it resumes one.
LEGACY_CONFIG_KEYS = ("base_model", "budget_bytes", "objective", "sft_ranks", "rft_ranks", "alpha_ratios", "lrs",
                      "epochs", "adapter_dtypes", "effort", "trials", "seed", "preset", "artifacts", "train_path",
                      "valid_path", "homework_rest_bytes")


def mark_study(study) -> None:
    """Write the ranksweep marker into a study (an optuna.Study) that ranksweep created or resumed."""
    study.set_user_attr(MARKER, {"version": MARKER_VERSION})


def marker_version(user_attrs: dict) -> int | None:
    """The ranksweep marker version of a study's user attrs: 1.., 0 for a study made before the marker, None for
    a study ranksweep did not make."""
    marker = user_attrs.get(MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("version"), int) and not isinstance(
            marker["version"], bool) and marker["version"] >= 1:
        return marker["version"] if isinstance(user_attrs.get("config"), dict) else None
    config = user_attrs.get("config")
    if marker is None and isinstance(config, dict) and isinstance(config.get("effort"), dict) and all(
            key in config for key in LEGACY_CONFIG_KEYS):
        return 0
    return None


def stored_config(study) -> StudyConfig:
    """The typed `config` of a study (an optuna.Study) already known to be ranksweep's."""
    return StudyConfig.from_attrs(study.user_attrs["config"])


def write_config(study, config: StudyConfig) -> None:
    """Store `config` as the study's `config` user attr."""
    study.set_user_attr("config", config.to_attrs())


def load_ranksweep_study(storage, study_name: str, storage_url: str, *, sampler=None):
    """The ranksweep study `study_name` (an optuna.Study) of an opened storage, and its config; for a missing or
    foreign study the one sentence every command gives (RanksweepError). Writes nothing."""
    import optuna  # heavy: loaded when a study is opened, not when the CLI starts

    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        known = ", ".join(sorted(names)) if names else "none"
        raise RanksweepError(f"No study named '{study_name}' in {masked(storage_url)}; studies there: {known}.")
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    return study, ranksweep_config(study, storage_url)


def ranksweep_config(study, storage_url: str) -> StudyConfig:
    """The `config` of a study ranksweep made (an optuna.Study); for any other study the one sentence every
    command gives (RanksweepError)."""
    version = marker_version(study.user_attrs)
    if version is None:
        raise RanksweepError(f"Study '{study.study_name}' in {masked(storage_url)} was not made by ranksweep (it "
                             f"carries no '{MARKER}' marker); ranksweep reads and runs only its own studies: give "
                             "the --study name of a study `ranksweep launch` made, or a new name to launch one.")
    if version > MARKER_VERSION:
        raise RanksweepError(f"Study '{study.study_name}' in {masked(storage_url)} was made by a newer ranksweep "
                             f"(study format {version}; this one reads up to {MARKER_VERSION}); upgrade ranksweep "
                             "to use it.")
    return stored_config(study)


def module_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def with_driver(url: str, installed: Callable[[str], bool] = module_installed) -> str:
    """A PostgreSQL URL without a driver (`postgresql://`, `postgres://`) given the driver that is installed.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, and no longer knows `postgres://` at all; the
    postgres extra installs psycopg2. So a bare URL means psycopg2 when it is installed, psycopg 3 when only that
    is, and psycopg2 otherwise (whose import error then names the missing driver). A URL naming its driver, and
    every other URL, is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        return url
    if not installed("psycopg2") and installed("psycopg"):
        return f"postgresql+psycopg://{rest}"
    return f"postgresql+psycopg2://{rest}"


def in_memory(url: str) -> bool:
    """Whether a URL names an in-memory SQLite database, which keeps nothing once the process ends."""
    if not url.startswith("sqlite:"):
        return False
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001  a malformed URL is refused when it is opened, with the library's reason
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or \
        parsed.query.get("mode") == "memory"


def in_memory_refusal(url: str) -> str:
    """The sentence that refuses an in-memory database (the CLI's --storage check and the opener both say it)."""
    return f"'{url}' is an in-memory database that keeps nothing once the command ends; give a file, e.g. " \
        "sqlite:///studies.db"


_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd)=)[^&\s'\"]*", re.IGNORECASE)


def masked(text: str) -> str:
    """Text fit to print: the password of every URL in it (user:PASSWORD@ or ?password=) replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", str(text)))


def heartbeat_seconds() -> int:
    """The heartbeat interval in seconds (RANKSWEEP_HEARTBEAT_SECONDS, else HEARTBEAT_SECONDS)."""
    text = os.environ.get("RANKSWEEP_HEARTBEAT_SECONDS", "")
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    return HEARTBEAT_SECONDS


def read_only_refusal(url: str) -> str:
    """The sentence that refuses a storage which takes no writes, naming the commands that still read it."""
    return (f"The storage {masked(url)} is read-only (its file or folder cannot be written): launch, worker and "
            "dashboard need to write to it; status, report, export and dashboard --read-only still read it.")


def check_sqlite_writable(database: str, url: str) -> None:
    """Refuse a SQLite file, or the folder of a new one, that takes no writes (a read-only file or folder, an
    immutable one), before anything is done. The probe is a write transaction that rewrites SQLite's own
    `user_version` with its value and is rolled back: the file is left byte for byte as it was."""
    path = Path(database)
    if not path.is_file():
        folder = path.absolute().parent
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise RanksweepError(read_only_refusal(url))
        return
    try:
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
    except sqlite3.Error:
        return  # not openable at all: the storage's own open says why
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            con.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # READONLY: the file; CANTOPEN at the first write: the folder, where the rollback journal cannot be made.
        if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
            raise RanksweepError(read_only_refusal(url)) from None
    finally:
        con.close()


def open_storage(storage: str | BaseStorage, *, must_exist: bool = True, heartbeat: bool = False,
                 writes: bool = False) -> BaseStorage:
    """An Optuna RDB storage for a URL; with `must_exist`, a missing SQLite file is a user error (nothing is
    created); with `heartbeat`, the study loop's heartbeat and stale-trial retry; with `writes`, a SQLite storage
    that takes no writes is refused first. Errors are one sentence."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the CLI prints its own progress and failures
    if not isinstance(storage, str):
        return storage
    if in_memory(storage):
        raise RanksweepError(in_memory_refusal(storage))
    storage = with_driver(storage)
    kwargs: dict = {}
    if storage.startswith("sqlite:"):
        database = sqlalchemy.engine.make_url(storage).database
        # RDBStorage would silently create an empty database; reading a study must never do that.
        if must_exist and database and database != ":memory:" and not Path(database).is_file():
            raise RanksweepError(
                f"No study storage at {database}; pass --storage with the URL the study was launched with."
            )
        if writes and database and database != ":memory:":
            check_sqlite_writable(database, storage)
        # SQLite allows one writer at a time: workers on one machine wait for the lock instead of failing
        # with "database is locked" (the default wait is 5 s, shorter than a busy study's writes can take).
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        beat = heartbeat_seconds()
        kwargs.update(heartbeat_interval=beat, grace_period=GRACE_BEATS * beat,
                      heartbeat_stale_trial_callback=retry_once)
    try:
        return _rdb_storage(storage, kwargs)
    except ImportError as exc:
        raise RanksweepError(f"Cannot open the storage {masked(storage)}: its database driver is not installed "
                             f"({exc}); for PostgreSQL install psycopg2 with `pip install psycopg2-binary` (the "
                             "postgres extra).") from None
    except (ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RanksweepError(f"Cannot open the storage {masked(storage)} ({masked(reason)}); check the --storage "
                             "URL.") from None


def retry_once(study, trial) -> None:
    """Enqueue a failed trial's pair once more (Optuna's `RetryHeartbeatStaleTrialCallback(max_retry=1)`), without
    the failed trial's user attrs: the retry must not show the dead process as its owner before it records its
    own, or the next process would take it for an orphan too."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trial = copy.deepcopy(trial)
    trial.user_attrs = {}
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def _rdb_storage(url: str, kwargs: dict):
    """RDBStorage(url), retried when another process is creating the same new SQLite file's tables at this
    moment ("table studies already exists", "UNIQUE constraint failed: alembic_version"): they exist once it
    is done, and the next look finds them."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(SQLITE_CREATE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as exc:
            text = str(exc)
            racing = "already exists" in text or "UNIQUE constraint failed" in text
            if not (url.startswith("sqlite:") and racing) or attempt + 1 == SQLITE_CREATE_TRIES:
                raise
            time.sleep(0.05 * (attempt + 1))
