"""A durable local spool of events: written to disk before they are sent, removed once stored.

Layout under the spool root (one root per API and client, see sdk.Tracker):

    slot-0/lock                 flock()ed by the live process that owns the slot
    slot-0/active.ndjson        events appended by put(), one JSON line each, fsync()ed
    slot-0/batch-000000000042.ndjson   sealed batches waiting to be sent, oldest first
    slot-0/dead/batch-….ndjson  batches the API refused (HTTP 4xx), with a .reason file beside

Each process takes a free slot. A slot whose lock is free but which still holds events belongs to
a process that died: the next spool opened on the same root adopts it and sends its batches, so
a crash loses nothing. An event keeps its event_id in the file, so a batch sent twice (the
answer was lost, or the process died before removing it) is stored once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from stepledger import StepledgerError

_BATCH = re.compile(r"^batch-(\d{12})\.ndjson$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Slot:
    """One locked directory of the spool."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.dead = path / "dead"
        existing = [int(m.group(1)) for p in path.iterdir() if (m := _BATCH.match(p.name))]
        self.next_seq = max(existing, default=0) + 1

    @classmethod
    def try_lock(cls, path: Path) -> Slot | None:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    @property
    def active(self) -> Path:
        return self.path / "active.ndjson"

    def batches(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if _BATCH.match(p.name))

    def seal(self) -> Path | None:
        """Turn active.ndjson into the next batch file; None when it holds no event."""
        if not self.active.exists():
            return None
        if self.active.stat().st_size == 0:
            self.active.unlink()
            return None
        batch = self.path / f"batch-{self.next_seq:012d}.ndjson"
        self.next_seq += 1
        os.replace(self.active, batch)
        _fsync_dir(self.path)
        return batch

    def is_empty(self) -> bool:
        return not self.batches() and not (self.active.exists() and self.active.stat().st_size)

    def release(self, remove_if_empty: bool = True) -> None:
        """Unlock; an empty slot (nothing queued, nothing dead) is removed."""
        dead_files = self.dead.exists() and any(self.dead.iterdir())
        if remove_if_empty and self.is_empty() and not dead_files:
            with contextlib.suppress(OSError):
                self.active.unlink(missing_ok=True)
                if self.dead.exists():
                    self.dead.rmdir()
                (self.path / "lock").unlink()
                self.path.rmdir()
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        os.close(self.lock_fd)


def read_batch(path: Path) -> list[bytes]:
    """The events of a batch file; a last line without its newline was torn by a crash while it
    was written (put() had not returned) and is left out."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line.strip()]


class Spool:
    """The calling process's slot of a spool root, plus adoption of orphaned slots."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._lock = threading.Lock()
        self._active_fh: BinaryIO | None = None
        self.active_count = 0
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StepledgerError(
                f"cannot create the spool directory {root}: {exc.strerror}") from None
        n = 0
        while True:
            slot = Slot.try_lock(root / f"slot-{n}")
            if slot is not None:
                break
            n += 1
        self.slot = slot
        # Events a dead owner of this slot had not sealed yet.
        self.slot.seal()

    # -- writing ----------------------------------------------------------------------------------
    def put(self, event: dict[str, object]) -> None:
        """Append one event; when this returns, the event is on disk (fsync) unless fsync=False."""
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            if self._active_fh is None:
                self._active_fh = open(self.slot.active, "ab")  # noqa: SIM115 - closed by seal
            fh = self._active_fh
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
            self.active_count += 1

    def seal(self) -> Path | None:
        with self._lock:
            if self._active_fh is not None:
                self._active_fh.close()
                self._active_fh = None
            self.active_count = 0
            return self.slot.seal()

    # -- reading ----------------------------------------------------------------------------------
    def pending(self) -> list[Path]:
        """This slot's sealed batches, oldest first."""
        return self.slot.batches()

    def pending_events(self) -> int:
        return sum(len(read_batch(p)) for p in self.pending()) + self.active_count

    def acknowledge(self, batch: Path) -> None:
        """The API stored the batch: forget it."""
        batch.unlink(missing_ok=True)
        _fsync_dir(batch.parent)

    def bury(self, batch: Path, reason: str) -> Path:
        """The API refused the batch: keep it under dead/ with the reason, out of the queue."""
        dead = batch.parent / "dead"
        dead.mkdir(exist_ok=True)
        target = dead / batch.name
        os.replace(batch, target)
        (dead / (batch.stem + ".reason")).write_text(reason + "\n")
        _fsync_dir(batch.parent)
        return target

    @contextlib.contextmanager
    def orphans(self) -> Iterator[list[Slot]]:
        """Slots of processes that died with events in them, locked while the caller drains them."""
        adopted: list[Slot] = []
        try:
            for path in sorted(self.root.glob("slot-*")):
                if path == self.slot.path or not path.is_dir():
                    continue
                slot = Slot.try_lock(path)
                if slot is None:
                    continue
                slot.seal()
                if slot.batches():
                    adopted.append(slot)
                else:
                    slot.release()
            yield adopted
        finally:
            for slot in adopted:
                slot.release()

    def close(self) -> None:
        with self._lock:
            if self._active_fh is not None:
                self._active_fh.close()
                self._active_fh = None
            self.slot.release()
