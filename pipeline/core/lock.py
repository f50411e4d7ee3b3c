"""The pipeline's locks: one run per environment (EnvLock, with a named holder) and machine-wide file
locks (file_lock, flock) for shared caches and the local cluster.

EnvLock: one release per environment at a time: a lock file with holder, PID and start time.

A lock whose PID is dead (same host) is stale: it is taken over, with a message. Creation is atomic
(O_EXCL), so two releases racing for a free lock cannot both win.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UsageError
from pipeline.core.processes import pid_alive
from pipeline.core.vocab import now_iso


class LockHeld(UsageError):
    """Another release to the same environment is running (exit 2)."""


@dataclass(frozen=True)
class Holder:
    user: str
    host: str
    pid: int
    started: str
    release_id: str

    def describe(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid} since {self.started} (release {self.release_id})"


class EnvLock:
    """An exclusive lock on one environment's state (`<lock_dir>/<env>.lock`): one run at a time.

    LockHeld (exit 2) names the holder; a lock whose process is gone (same host) is taken over.
    """

    def __init__(self, lock_dir: Path, env: str, release_id: str) -> None:
        self.path = lock_dir / f"{env}.lock"
        self.env = env
        self.release_id = release_id

    def holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = Holder(getpass.getuser(), socket.gethostname(), os.getpid(), now_iso(), self.release_id)
        for _ in range(2):
            # The lock appears whole or not at all: written to a private file, then hard-linked into place
            # (link fails when the name exists), so a competitor never reads a half-written holder.
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(me.__dict__))
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                h = self.holder()
                if h is not None and (h.host != socket.gethostname() or pid_alive(h.pid)):
                    raise LockHeld(f"another release to {self.env} is running: {h.describe()}",
                                   f"wait for it to finish; if that process is gone, delete {self.path}") from None
                # Stale (dead PID on this host) or unreadable: take it over. Rename first so a racing
                # release cannot delete the lock we are about to create.
                stale = self.path.with_suffix(f".stale.{os.getpid()}")
                try:
                    os.replace(self.path, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass
                what = h.describe() if h else "unreadable lock file"
                print(f"lock: took over a stale lock on {self.env} ({what}: process is gone)", flush=True)
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return
        raise LockHeld(f"could not take the lock on {self.env} ({self.path})", f"delete {self.path} and retry")

    def release(self) -> None:
        h = self.holder()
        if h is not None and h.pid == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> EnvLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path` for the duration of the block; the kernel releases it
    when the holder dies, so there is no stale state to clean.

    on_wait: called once when another process holds the lock, before waiting for it (to say so).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def exclusive_or_fail(path: Path, holder: str, busy: Callable[[str], Exception]) -> Iterator[str]:
    """A non-blocking exclusive flock on `path` that names its holder in the file; yields the line the file
    held before (the previous holder: when it is not running, whatever it left pending is abandoned).

    Raises busy(<current holder's line>) at once when another process holds the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(path.read_text().strip()) from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder + "\n").encode(), 0)
        yield previous
    finally:
        os.close(fd)
