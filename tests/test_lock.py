"""
No overlapping runs: the per-config flock, refusing with exit 4 or waiting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import lock
from orchestrator.errors import LockHeldError
from tests.test_cli import StartSim, cli, start_cli, wait_for_log_event, write_config


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    """A nested acquisition fails at once and names the holder's pid."""
    path = lock.path_for(tmp_path / "c.yaml", tmp_path)

    holder = f"pid {os.getpid()}"
    with lock.held(path), pytest.raises(LockHeldError, match=holder), lock.held(path):
        pass

    with lock.held(path):
        pass  # released on exit: taking it again works


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        pytest.param(("a.yaml", None), ("a.yaml", None), True, id="same-config"),
        pytest.param(("a.yaml", None), ("b.yaml", None), False, id="other-config"),
        pytest.param(("a.yaml", "0/2"), ("a.yaml", "1/2"), False, id="other-shard"),
    ],
)
def test_lock_file_is_keyed_by_config_path_and_shard(
    tmp_path: Path,
    first: tuple[str, str | None],
    second: tuple[str, str | None],
    same: bool,
) -> None:
    """Runs of one config share a lock; other configs and shards do not."""
    one = lock.path_for(tmp_path / first[0], tmp_path, first[1])
    two = lock.path_for(tmp_path / second[0], tmp_path, second[1])

    assert (one == two) is same


def test_run_refuses_with_exit_4_while_the_lock_is_held(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A second run exits 4 naming the holder and sends nothing."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=2)
    path = lock.path_for(config, tmp_path)

    with lock.held(path):
        done = cli("run", str(config), "--lock-dir", str(tmp_path))

    assert done.returncode == 4
    assert f"pid {os.getpid()}" in done.stderr
    assert sim.requests() == []


def test_run_with_wait_lock_starts_once_the_holder_lets_go(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """--wait-lock waits for the holder, then runs to completion."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=2)
    path = lock.path_for(config, tmp_path)

    with lock.held(path):
        process = start_cli(
            "run", str(config), "--lock-dir", str(tmp_path), "--wait-lock", "60",
            "--report", str(tmp_path / "r.json"),
        )  # fmt: skip
        wait_for_log_event(process, "lock.waiting")
    process.communicate(timeout=60)

    assert process.returncode == 0
    assert len(sim.requests()) == 2
