"""Opening an Optuna storage by URL: the one place that does it, for the study loop and for the readers; and
telling a ranksweep study from any other study the storage holds (`ranksweep_config`).

The loop's storage carries Optuna's heartbeat (`heartbeat_interval`, `grace_period`): while a trial runs,
Optuna's own thread records a beat, and a RUNNING trial whose beat is older than the grace period is
failed by the next process that starts a trial, which re-enqueues its pair once
(`RetryHeartbeatStaleTrialCallback`). Readers open it without.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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


def ranksweep_config(study, storage_url: str) -> dict:
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
    return study.user_attrs["config"]


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


def open_storage(storage: str | BaseStorage, *, must_exist: bool = True, heartbeat: bool = False) -> BaseStorage:
    """An Optuna RDB storage for a URL; with `must_exist`, a missing SQLite file is a user error (nothing is
    created); with `heartbeat`, the study loop's heartbeat and stale-trial retry. Errors are one sentence."""
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
        # SQLite allows one writer at a time: workers on one machine wait for the lock instead of failing
        # with "database is locked" (the default wait is 5 s, shorter than a busy study's writes can take).
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        beat = heartbeat_seconds()
        kwargs.update(heartbeat_interval=beat, grace_period=GRACE_BEATS * beat,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
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


def _rdb_storage(url: str, kwargs: dict):
    """RDBStorage(url), retried when another process is creating the same new SQLite file's tables at this
    moment ("table studies already exists", "UNIQUE constraint failed: alembic_version"): they exist once it
    is done, and the next look finds them."""
    import time

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
