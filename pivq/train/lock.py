"""One writer per run: training holds an exclusive lock on ``<run_dir>/train.lock`` for as long as it runs.

An advisory ``flock`` on an open file, not the file's existence: the kernel releases it when the holder dies in
any way (SIGKILL, an OOM kill, a lost node's reboot), so a killed job's retry is never locked out, while a second
training of the same experiment started beside a live one (two `pivq train`, or `pivq train` beside Snakemake)
is refused at once, naming the host, process and start time the lock file records. On NFS, Linux maps flock to
the server's byte-range locks, so the refusal holds across nodes that share the run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pivq.errors import UserError

LOCK_FILE = "train.lock"


class RunLockedError(UserError, RuntimeError):
    """Another process is training this run."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<run_dir>/train.lock`` exclusively for the block, or raise RunLockedError naming its holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unnamed process"
            raise RunLockedError(f"{run_dir} is being trained by {holder} (it holds {path}); a second training of "
                                 "the same run is refused: wait for it to finish, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
