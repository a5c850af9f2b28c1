"""The garbage collector's threshold for pipeline batches (payhub.collector), and the worker setting it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import migrated, write_config
from click.testing import CliRunner

from payhub.cli import main
from payhub.collector import BATCH_THRESHOLD, tune_for_batches
from payhub.runtime import Runtime
from payhub.settings import load_settings
from payhub.worker import Worker


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_and_the_older_ones_kept() -> None:
    gc.set_threshold(700, 11, 12)
    tune_for_batches()
    assert gc.get_threshold() == (BATCH_THRESHOLD, 11, 12)


@pytest.mark.parametrize("young", [0, BATCH_THRESHOLD * 2])
def test_a_collector_switched_off_or_set_higher_is_left_alone(young: int) -> None:
    gc.set_threshold(young, 10, 10)
    tune_for_batches()
    assert gc.get_threshold() == (young, 10, 10)


def test_a_worker_starting_sets_the_collector_for_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'payhub.db'}"
    migrated(url)
    rt = Runtime(load_settings(write_config(tmp_path, url, "")))
    gc.set_threshold(700, 10, 10)
    try:
        Worker(rt).start()
        assert gc.get_threshold() == (BATCH_THRESHOLD, 10, 10)
    finally:
        rt.close()


def test_the_audit_commands_set_the_collector_for_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'payhub.db'}"
    migrated(url)
    config = write_config(tmp_path, url, "")
    gc.set_threshold(700, 10, 10)
    result = CliRunner().invoke(main, ["-c", str(config), "audit", "verify", "--no-checkpoints"])
    assert result.exit_code == 0, result.output
    assert gc.get_threshold() == (BATCH_THRESHOLD, 10, 10)
