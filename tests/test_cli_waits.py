"""No silent waits: `stepledger load` and `tail` fail within seconds, in one line, when the stack is
down, and `tail` refuses a missing file unless `--wait` is given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from conftest import free_ports
from test_loader_support import (
    botimage_events,
    events_of,
    legacy_lines,
    new_tag,
    wait_for,
    write_ndjson,
)

# "A few seconds": the check gives up after 3 s. Measured beyond the time the same command
# takes to start and print its help, which a loaded machine stretches.
FAST_S = 6.0


def run(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stepledger", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return done, time.monotonic() - started


def startup_s(env: dict[str, str]) -> float:
    return run(["load", "--help"], env)[1]


@pytest.fixture
def down_env(tmp_path: Path) -> dict[str, str]:
    """An API URL where nothing listens, as when the stack is down."""
    [port] = free_ports(1)
    return {**os.environ, "STEPLEDGER_URL": f"http://127.0.0.1:{port}",
            "STEPLEDGER_TOKEN": "any-token", "STEPLEDGER_HOME": str(tmp_path / "home")}


def test_load_with_the_stack_down_fails_within_seconds(tmp_path: Path,
                                                       down_env: dict[str, str]) -> None:
    path = write_ndjson(tmp_path / "events.ndjson", botimage_events(new_tag(), jobs=1))
    done, took = run(["load", "--quiet", str(path)], down_env)
    took -= startup_s(down_env)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"stepledger: cannot reach the API at {down_env['STEPLEDGER_URL']}")
    assert line.endswith("is the stack up? try `stepledger up`")
    assert took < FAST_S, f"took {took:.1f} s"


def test_tail_with_the_stack_down_fails_within_seconds(tmp_path: Path,
                                                       down_env: dict[str, str]) -> None:
    log = tmp_path / "botimage.log"
    log.write_text("")
    done, took = run(["tail", str(log), "--state", str(tmp_path / "state.json")], down_env)
    took -= startup_s(down_env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith("is the stack up? try `stepledger up`")
    assert took < FAST_S, f"took {took:.1f} s"


def test_tail_of_a_missing_file_is_an_error(tmp_path: Path, down_env: dict[str, str]) -> None:
    missing = tmp_path / "missing.log"
    done, took = run(["tail", str(missing), "--state", str(tmp_path / "state.json")], down_env)
    took -= startup_s(down_env)
    assert (done.returncode, done.stderr.strip()) == (
        1, f"stepledger: cannot read {missing}: no such file (--wait waits for it to appear)")
    assert took < FAST_S
    done, _ = run(["tail", str(tmp_path), "--state", str(tmp_path / "state.json")], down_env)
    assert done.returncode == 1 and "not a regular file" in done.stderr


@pytest.mark.usefixtures("loader_catalog")
def test_tail_wait_follows_a_file_that_appears_later(
        tmp_path: Path, su_conn: psycopg.Connection, api_url: str,
        jwt_for: Callable[..., str]) -> None:
    tag = new_tag()
    events = botimage_events(tag, jobs=1)
    log = tmp_path / "later.log"
    env = {**os.environ, "STEPLEDGER_URL": api_url, "STEPLEDGER_TOKEN": jwt_for("admin")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepledger", "tail", str(log), "--wait", "--poll", "0.05",
         "--state", str(tmp_path / "state.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "following" in (proc.stderr.readline() if proc.poll() is None else "x"),
                 what="tail to start")
        assert proc.poll() is None, proc.stderr.read()
        log.write_text("\n".join(legacy_lines(events)) + "\n")
        wait_for(lambda: events_of(su_conn, tag) == len(events), what="the lines to be stored")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "accepted" in out
