"""Atomic file writes, JSON and hashing: every output of the pipeline goes through here.

Outputs are written to a temporary name in the destination folder and renamed when complete, so a
killed job never leaves a truncated file under the final name; the temporary file it may leave is removed
when the job runs again (``remove_stale_temporaries``, called by ``pivq.logs.to_file``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` keeps an extension some writers insist on (``np.save`` appends ``.npy``).
    On any exception the temporary file is removed and the error re-raised with the path named.
    The file gets the mode a plain ``open`` would give it (0666 less the umask): mkstemp's private 0600 would
    otherwise survive the rename and lock a lab's shared project folder to its writer.
    """
    path = Path(path)
    try:  # a read-only or full folder fails here already: name the output, not the temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _naming(err, path) from err
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else _os_error_in(err) if isinstance(err, RuntimeError) else None
        if cause is not None:
            raise _naming(cause, path) from err
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux's /proc says it (os.umask can only set it,
    which would race with other threads), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the temporary files that ``atomic_path`` left beside each of ``paths`` when its writer was
    killed (SIGKILL, a lost node: no ``except`` ran), and return them.

    Only for paths that no live process is writing, such as a Snakemake job's declared outputs when the job
    starts (Snakemake runs one job per output at a time); never for a shared cache."""
    removed = []
    for path in map(Path, paths):
        # mkstemp's names: the prefix, 8 characters of [a-z0-9_], then our ".tmp" (and the writer's suffix)
        stale = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path.parent) as entries:
            for entry in entries:
                if stale.match(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind a RuntimeError, if any: torch's zip writer turns a full disk into a RuntimeError
    ("unexpected pos") raised while handling the OSError."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _naming(err: OSError, path: Path) -> OSError:
    """An error with the same errno (so the same OSError subclass), its message naming the output."""
    return OSError(err.errno, f"could not write {path}: {err.strerror or err}")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for DVC and git diffs)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file: {path}") from None
    return parse_json(text, path)


def parse_json(text: str | bytes, source: str | os.PathLike) -> Any:
    """json.loads, with a ValueError naming ``source`` (the file the text came from) on bad JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
