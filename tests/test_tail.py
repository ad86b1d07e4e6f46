"""`stepledger tail`: follow a growing legacy log, across restarts, kills and rotations, and count
every line exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from stepledger import StepledgerError
from stepledger.api_client import IngestClient
from stepledger.ingest.readers.legacy import LegacyConverter
from stepledger.ingest.tail import Tailer, TailState
from test_loader_support import (
    botimage_events,
    count,
    events_of,
    legacy_lines,
    new_tag,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("loader_catalog")


@pytest.fixture
def cli_env(api_url: str, jwt_for: Callable[..., str]) -> dict[str, str]:
    return {**os.environ, "STEPLEDGER_URL": api_url, "STEPLEDGER_TOKEN": jwt_for("admin")}


def append(path: Path, lines: list[str], end: str = "\n") -> None:
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + end)


def duplicates_of(conn: psycopg.Connection, tag: str) -> int:
    return count(conn, "select count(*) from ledger.vault where payload->>'job_id' like %s "
                       "and outcome = 'duplicate'", [f"{tag}-%"])


@contextlib.contextmanager
def running_tail(path: Path, state: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`stepledger tail` following `path`; killed on the way out unless the test stopped it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepledger", "tail", str(path), "--state", str(state),
         "--poll", "0.05", "--batch-size", "25"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail_across_a_restart(tmp_path: Path, su_conn: psycopg.Connection,
                               cli_env: dict[str, str]) -> None:
    tag = new_tag()
    lines = legacy_lines(botimage_events(tag, clients=("st-mary", "northgate"), jobs=3),
                         with_attempt=False)
    total = len(lines)
    third = total // 3
    log = tmp_path / "botimage.log"
    state = tmp_path / "tail-state.json"
    append(log, ["BotImage 4.2 starting", *lines[:third]])

    with running_tail(log, state, cli_env) as proc:
        wait_for(lambda: events_of(su_conn, tag) == third, what="the first third")
        # the program writes on; its last line is not finished yet
        append(log, [*lines[third:2 * third], "loading weights", lines[2 * third][:30]], end="")
        wait_for(lambda: events_of(su_conn, tag) == 2 * third, what="the second third")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped at line" in out
    saved = TailState.load(state, log)
    assert saved is not None
    assert saved.offset == len(log.read_bytes()) - 30     # the unfinished line is not taken
    assert saved.line == 2 * third + 2

    # while tail is down: the line is finished, more lines come, and a broken step line
    bad = lines[0].replace(" step ", " step 0/", 1)
    append(log, [lines[2 * third][30:], *lines[2 * third + 1:], bad])
    with running_tail(log, state, cli_env) as proc:
        wait_for(lambda: events_of(su_conn, tag) == total, what="all lines")
        wait_for(lambda: count(su_conn, "select count(*) from ledger.vault where raw_text = %s",
                               [bad]), what="the bad line in the vault")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert events_of(su_conn, tag) == total
    assert duplicates_of(su_conn, tag) == 0     # a clean stop sends nothing twice
    assert count(su_conn, "select count(distinct event_id) from ledger.events "
                          "where job_id like %s", [f"{tag}-%"]) == total


def test_tail_killed_mid_run_loses_nothing_and_counts_nothing_twice(
        tmp_path: Path, su_conn: psycopg.Connection, cli_env: dict[str, str]) -> None:
    tag = new_tag()
    lines = legacy_lines(botimage_events(tag, clients=("riverside",), jobs=6))
    log = tmp_path / "botimage.log"
    state = tmp_path / "tail-state.json"
    append(log, lines[:50])
    with running_tail(log, state, cli_env) as proc:
        wait_for(lambda: events_of(su_conn, tag) >= 25, what="some lines")
        append(log, lines[50:])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with running_tail(log, state, cli_env) as proc:
        wait_for(lambda: events_of(su_conn, tag) == len(lines), what="every line")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert count(su_conn, "select count(*) from ledger.events where job_id like %s",
                 [f"{tag}-%"]) == len(lines)
    jobs = su_conn.execute("select sum(events) from ledger.jobs where job_id like %s",
                           [f"{tag}-%"]).fetchone()
    assert jobs == (len(lines),)


@pytest.fixture
def tailer_factory(api_url: str, jwt_for: Callable[..., str],
                   tmp_path: Path) -> Iterator[Callable[[Path], tuple[Tailer, threading.Thread]]]:
    running: list[tuple[Tailer, threading.Thread, IngestClient]] = []

    def start(log: Path) -> tuple[Tailer, threading.Thread]:
        client = IngestClient(api_url, jwt_for("admin"))
        tailer = Tailer(log, client, LegacyConverter(), state_path=tmp_path / "state.json",
                        poll_s=0.05, batch_size=10)
        thread = threading.Thread(target=tailer.run, daemon=True)
        thread.start()
        running.append((tailer, thread, client))
        return tailer, thread

    yield start
    for tailer, thread, client in running:
        tailer.stop.set()
        thread.join(timeout=30)
        client.close()


def stop(tailer: Tailer, thread: threading.Thread) -> None:
    tailer.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_tail_follows_a_rotated_log(tmp_path: Path, su_conn: psycopg.Connection,
                                    tailer_factory: Callable[..., tuple[Tailer, threading.Thread]]
                                    ) -> None:
    tag = new_tag()
    lines = legacy_lines(botimage_events(tag, jobs=4))
    parts = [lines[i * len(lines) // 5:(i + 1) * len(lines) // 5] for i in range(5)]
    log = tmp_path / "botimage.log"
    append(log, parts[0])
    tailer, thread = tailer_factory(log)
    wait_for(lambda: events_of(su_conn, tag) == len(parts[0]), what="part 1")

    # rotation while tail runs: the last lines of the old file, then the new file
    append(log, parts[1])
    log.rename(tmp_path / "botimage.log.1")
    append(log, parts[2])
    wait_for(lambda: events_of(su_conn, tag) == sum(map(len, parts[:3])), what="parts 1-3")
    stop(tailer, thread)

    # rotation while tail is stopped: the rest of the old file is found by its inode
    append(log, parts[3])
    log.rename(tmp_path / "botimage.log.2")
    append(log, parts[4])
    tailer, thread = tailer_factory(log)
    wait_for(lambda: events_of(su_conn, tag) == len(lines), what="every part")
    stop(tailer, thread)
    assert duplicates_of(su_conn, tag) == 0


def test_tail_rereads_a_truncated_log(tmp_path: Path, su_conn: psycopg.Connection,
                                      tailer_factory: Callable[..., tuple[Tailer, threading.Thread]]
                                      ) -> None:
    tag = new_tag()
    lines = legacy_lines(botimage_events(tag, jobs=2))
    log = tmp_path / "botimage.log"
    append(log, lines[:20])
    tailer, thread = tailer_factory(log)
    wait_for(lambda: events_of(su_conn, tag) == 20, what="the first lines")
    # copy-and-truncate rotation: the file starts again, with new lines
    with open(log, "w") as fh:
        fh.write("\n".join(lines[20:]) + "\n")
    wait_for(lambda: events_of(su_conn, tag) == len(lines), what="the lines after truncation")
    stop(tailer, thread)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["offset"] == log.stat().st_size
    assert state["line"] == len(lines) - 20


def test_one_tail_per_state_file(tmp_path: Path, api_url: str, jwt_for: Callable[..., str],
                                 tailer_factory: Callable[..., tuple[Tailer, threading.Thread]]
                                 ) -> None:
    log = tmp_path / "botimage.log"
    log.write_text("")
    tailer, thread = tailer_factory(log)
    wait_for(lambda: (tmp_path / "state.json").exists(), what="the first tail's state")
    with IngestClient(api_url, jwt_for("admin")) as client:
        second = Tailer(log, client, LegacyConverter(), state_path=tmp_path / "state.json")
        with pytest.raises(StepledgerError, match="another `stepledger tail` follows"):
            second.run()
    stop(tailer, thread)
