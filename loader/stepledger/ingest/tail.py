"""`stepledger tail FILE`: follow a growing log as the program writes it, and ingest each line.

Only complete lines are read (a line the program is still writing waits for its newline). After
each batch the API has stored, the byte offset reached is saved in a state file (written to a
temporary file and renamed, so a crash leaves the old state or the new one, never half of one).
On restart tailing resumes at that offset: no line is skipped. A batch sent but not yet recorded
when the process died is sent again, and its events, whose ids come from the line text, count as
duplicates: no line is counted twice.

Rotation: when the path names a new file (rename and create), the old file is read to its end
first; when the file shrinks (copy and truncate), reading restarts at its beginning. When the
file was rotated while tail was stopped, the old file is looked for by its inode in the same
directory and read from the saved offset first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from stepledger import StepledgerError
from stepledger.api_client import IngestClient, IngestResult, RetryPolicy, TransientError
from stepledger.ingest.outcomes import Outcomes
from stepledger.ingest.readers import dump
from stepledger.ingest.readers.legacy import AttemptCounter, LegacyConverter, LegacyLineError

log = logging.getLogger("stepledger.tail")
HEAD_BYTES = 256     # the first bytes of a file identify it along with its inode


def default_state_path(path: Path) -> Path:
    """~/.local/state/stepledger/tail/<name>-<hash of the absolute path>.json"""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return base / "stepledger" / "tail" / f"{path.name}-{digest}.json"


@dataclass
class TailState:
    path: str
    device: int = 0
    inode: int = 0
    head: str = ""          # sha256 of the file's first head_len bytes (up to HEAD_BYTES)
    head_len: int = 0
    offset: int = 0         # bytes of the file fully sent
    line: int = 0           # lines of the file fully sent
    attempts: list[list[object]] = field(default_factory=list)

    @classmethod
    def load(cls, state_path: Path, path: Path) -> TailState | None:
        try:
            data = json.loads(state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StepledgerError(f"cannot read the tail state {state_path}: {exc}") from None
        state = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if Path(state.path).resolve() != path.resolve():
            raise StepledgerError(f"{state_path} is the state of {state.path}, not of {path}")
        return state

    def save(self, state_path: Path) -> None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_name(state_path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, state_path)
        dir_fd = os.open(state_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _head_digest(fh: BinaryIO, length: int = HEAD_BYTES) -> tuple[str, int]:
    """sha256 of the file's first `length` bytes (fewer when it is shorter), and their number."""
    where = fh.tell()
    fh.seek(0)
    head = fh.read(length)
    fh.seek(where)
    return (hashlib.sha256(head).hexdigest() if head else ""), len(head)


def _same_head(fh: BinaryIO, state: TailState) -> bool:
    return _head_digest(fh, state.head_len) == (state.head, state.head_len)


@dataclass
class TailStats(Outcomes):
    lines: int = 0
    skipped: int = 0
    batches: int = 0


class Tailer:
    """Follows one file. `run()` returns when `stop` is set (after saving its state)."""

    def __init__(self, path: Path, client: IngestClient, converter: LegacyConverter,
                 state_path: Path | None = None, fmt: str = "legacy", poll_s: float = 0.5,
                 batch_size: int = 500, from_end: bool = False,
                 retry: RetryPolicy | None = None,
                 on_batch: Callable[[TailStats, IngestResult], None] | None = None) -> None:
        if fmt not in ("legacy", "ndjson"):
            raise StepledgerError(f"tail follows legacy or ndjson files, not {fmt}")
        self.path = path
        self.client = client
        self.converter = converter
        self.state_path = state_path or default_state_path(path)
        self.format = fmt
        self.poll_s = poll_s
        self.batch_size = batch_size
        self.from_end = from_end
        self.retry = retry or RetryPolicy(attempts=None, max_s=15.0)
        self.on_batch = on_batch
        self.stats = TailStats()
        self.stop = threading.Event()
        self.state = TailState(str(path))

    # -- files ------------------------------------------------------------------------------------
    def _open_current(self) -> BinaryIO | None:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StepledgerError(f"cannot read {self.path}: {exc.strerror}") from None
        return fh

    def _identity(self, fh: BinaryIO) -> tuple[int, int]:
        st = os.fstat(fh.fileno())
        return st.st_dev, st.st_ino

    def _find_rotated(self, saved: TailState) -> Path | None:
        """The file that had the saved inode, if it is still in the directory under a new name."""
        for candidate in self.path.parent.iterdir():
            try:
                st = candidate.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (saved.device, saved.inode) and candidate.is_file():
                return candidate
        return None

    def _adopt(self, fh: BinaryIO, offset: int, line: int) -> None:
        self.state.device, self.state.inode = self._identity(fh)
        self.state.offset, self.state.line = offset, line
        self.state.head, self.state.head_len = _head_digest(fh)
        fh.seek(offset)

    # -- sending ----------------------------------------------------------------------------------
    def _convert(self, number: int, text: str) -> tuple[bytes | None, dict[str, object] | None]:
        if self.format == "ndjson":
            stripped = text.strip()
            return (stripped.encode(), None) if stripped else (None, None)
        if not self.converter.is_step_line(text):
            if text.strip() and not text.lstrip().startswith("#"):
                self.stats.skipped += 1
            return None, None
        try:
            return dump(self.converter.event(text)), None
        except LegacyLineError as exc:
            return None, {"line": number, "text": text.rstrip("\r\n").replace("\x00", "\ufffd"),
                          "error": f"{exc} (line {number} of {self.path})"}

    def _send(self, lines: list[bytes], first_line: int) -> IngestResult:
        """Send complete lines (numbered from first_line); returns once the API stored them."""
        bodies: list[bytes] = []
        unreadable: list[dict[str, object]] = []
        for i, raw in enumerate(lines):
            body, bad = self._convert(first_line + i, raw.decode("utf-8", "replace"))
            if body is not None:
                bodies.append(body)
            if bad is not None:
                unreadable.append(bad)
        result = IngestResult()

        def attempt() -> None:
            nonlocal result
            result = IngestResult()
            if bodies:
                result.add(self.client.send_ndjson(b"\n".join(bodies)))
            if unreadable:
                result.add(self.client.send_unreadable(unreadable))

        def waiting(exc: TransientError, delay: float) -> None:
            log.warning("%s; retrying in %.1fs", exc, delay)
            if self.stop.is_set():
                raise exc

        if bodies or unreadable:
            self.retry.run(attempt, on_retry=waiting, sleep=self.stop.wait)
        self.stats.lines += len(lines)
        self.stats.accepted += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += len(result.rejected)
        self.stats.batches += 1
        for item in result.rejected:
            errors = item.get("errors") or []
            log.warning("%s: rejected: %s", self.path, json.dumps(errors)[:300])
        return result

    def _pump(self, fh: BinaryIO, final: bool = False) -> None:
        """Send every complete line from the saved offset to the end of `fh` (with `final`, a
        last line without its newline too), saving the state after each batch."""
        fh.seek(self.state.offset)
        pending: list[bytes] = []
        rest = b""
        while True:
            chunk = fh.read(1 << 16)
            if chunk:
                lines = (rest + chunk).split(b"\n")
                pending.extend(lines[:-1])
                rest = lines[-1]
            if final and not chunk and rest:
                pending.append(rest)
                rest = b""
            while len(pending) >= self.batch_size or (pending and not chunk):
                part, pending = pending[:self.batch_size], pending[self.batch_size:]
                result = self._send(part, self.state.line + 1)
                self.state.offset = min(self.state.offset + sum(len(x) + 1 for x in part),
                                        os.fstat(fh.fileno()).st_size)
                self.state.line += len(part)
                self.state.attempts = self.converter.attempts.state()
                self._refresh_head(fh)
                self.state.save(self.state_path)
                if self.on_batch is not None:
                    self.on_batch(self.stats, result)
            if not chunk:
                return

    def _refresh_head(self, fh: BinaryIO) -> None:
        if self.state.head_len < HEAD_BYTES:
            self.state.head, self.state.head_len = _head_digest(fh)

    # -- the loop ---------------------------------------------------------------------------------
    def _resume(self) -> BinaryIO | None:
        saved = TailState.load(self.state_path, self.path)
        if saved is not None:
            self.converter.attempts = AttemptCounter(state=saved.attempts)
        fh = self._open_current()
        if saved is not None and saved.inode:
            current = self._identity(fh) if fh is not None else None
            same = (fh is not None and current == (saved.device, saved.inode)
                    and _same_head(fh, saved))
            if same and fh is not None:
                size = os.fstat(fh.fileno()).st_size
                if size >= saved.offset:
                    self.state = saved
                    fh.seek(saved.offset)
                    return fh
                log.warning("%s is shorter than when last read: reading it again from the start",
                            self.path)
                self.state = TailState(str(self.path), attempts=saved.attempts)
                self._adopt(fh, 0, 0)
                return fh
            rotated = self._find_rotated(saved)
            if rotated is not None:
                log.info("%s was rotated to %s: reading the rest of it first", self.path, rotated)
                with open(rotated, "rb") as old:
                    if _same_head(old, saved):
                        self.state = saved
                        self._pump(old, final=True)
            self.state = TailState(str(self.path), attempts=self.converter.attempts.state())
        if fh is not None:
            end = os.fstat(fh.fileno()).st_size if self.from_end and saved is None else 0
            line = 0
            if end:
                fh.seek(0)
                line = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
            self._adopt(fh, end, line)
            self.state.save(self.state_path)
        return fh

    def run(self) -> TailStats:
        """Follow the file until `stop` is set. Lines not yet stored when it stops (the API being
        away) stay after the saved offset and are sent by the next run."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.state_path.with_name(self.state_path.name + ".lock"),
                       os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise StepledgerError(f"another `stepledger tail` follows {self.path} "
                                  f"(state {self.state_path})") from None
        try:
            return self._follow()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)

    def _follow(self) -> TailStats:
        fh = self._resume()
        try:
            while not self.stop.is_set():
                if fh is None:
                    fh = self._open_current()
                    if fh is None:
                        self.stop.wait(self.poll_s)
                        continue
                    self._adopt(fh, 0, 0)
                    self.state.save(self.state_path)
                fh = self._check_rotation(fh)
                if fh is None:
                    continue
                before = self.state.offset
                self._pump(fh)
                if self.state.offset > before and os.fstat(fh.fileno()).st_size > self.state.offset:
                    continue    # more arrived while sending: no pause
                self.stop.wait(self.poll_s)
        except TransientError as exc:
            if not self.stop.is_set():
                raise
            log.warning("stopped before the API came back (%s); the rest is sent next time", exc)
        finally:
            if fh is not None:
                fh.close()
        return self.stats

    def _check_rotation(self, fh: BinaryIO) -> BinaryIO | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return fh        # renamed away, not yet recreated: keep reading the old one
        size = os.fstat(fh.fileno()).st_size
        if (st.st_dev, st.st_ino) != self._identity(fh):
            self._pump(fh, final=True)          # the rest of the old file first
            fh.close()
            new = self._open_current()
            if new is not None:
                self._adopt(new, 0, 0)
                self.state.save(self.state_path)
            return new
        if size < self.state.offset or not _same_head(fh, self.state):
            log.warning("%s was truncated: reading it again from the start", self.path)
            self._adopt(fh, 0, 0)
            self.state.save(self.state_path)
        return fh
