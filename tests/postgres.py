"""Helpers for tests that need storages other than a local SQLite file: a real PostgreSQL server
(named by RANKSWEEP_TEST_POSTGRES; `.ci/run` starts one on loopback) and a port nothing listens on."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

ENV = "RANKSWEEP_TEST_POSTGRES"


def postgres_url() -> str:
    """The test server's URL, or skip the test with the reason when none is configured."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(f"{ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")
    return url


def unique_name(prefix: str) -> str:
    """A study name no earlier run left in the shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
