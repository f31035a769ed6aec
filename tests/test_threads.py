"""Cores shared rightly: `--threads`, $RANKSWEEP_THREADS and the affinity mask decide torch's thread count."""

from __future__ import annotations

import os

import pytest
import torch

from trainers.hardware import THREADS_ENV, set_threads, thread_count


@pytest.fixture
def restore_threads(monkeypatch):
    saved = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", ""))  # restored after the test
    torch.set_num_threads(3)  # a count no default below produces by accident on a 1- or 2-core machine
    yield
    torch.set_num_threads(saved)


def test_worker_threads_flag_sets_torch_threads(ranksweep, tmp_path, restore_threads):
    # The study does not exist, so the worker stops with exit 2; the thread count was set before that.
    done = ranksweep("worker", "--study", "missing", "--storage", f"sqlite:///{tmp_path}/s.db", "--threads", "1")
    assert done.returncode == 2, done.stderr
    assert torch.get_num_threads() == 1


def test_commands_a_process_starts_take_its_share(restore_threads):
    # Read here, not after an in-process CLI call: the test runner puts the environment back after each command.
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # a homework's trainer started now gets one thread too


def test_launch_reads_threads_from_the_environment(ranksweep, tmp_path, restore_threads, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    # A budget no pair fits: refused after the thread count was set, before any study exists.
    done = ranksweep("launch", "--study", "s", "--storage", f"sqlite:///{tmp_path}/s.db", "--base-model", "tiny",
                     "--budget-mb", "0.0001")
    assert done.returncode == 2, done.stderr
    assert torch.get_num_threads() == 2


def test_default_is_every_core_the_process_may_use(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert thread_count() == len(os.sched_getaffinity(0))
    assert thread_count(5) == 5  # the flag wins over everything


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_variable_is_one_sentence(ranksweep, tmp_path, restore_threads, value):
    done = ranksweep("worker", "--study", "missing", "--storage", f"sqlite:///{tmp_path}/s.db",
                     env={THREADS_ENV: value})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and THREADS_ENV in done.stderr, done.stderr
    assert torch.get_num_threads() == 3  # nothing was changed


def test_bad_threads_flag_is_a_usage_error(ranksweep, tmp_path):
    done = ranksweep("worker", "--study", "missing", "--storage", f"sqlite:///{tmp_path}/s.db", "--threads", "0")
    assert done.returncode == 2 and "--threads" in done.stderr
