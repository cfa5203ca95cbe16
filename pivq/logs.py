"""Send a stage's logging, warnings, stdout and stderr (tqdm bars included) to its log file; say what ran where."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from pivq.io import remove_stale_temporaries


@contextlib.contextmanager
def to_file(path: str | os.PathLike | None, outputs: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """Everything the block prints or logs goes to ``path`` (appended, so a resumed job keeps its history).

    With ``path=None`` the output stays on the terminal and only logging is configured. ``outputs``: the
    job's own outputs, whose temporary files left by a killed earlier attempt are deleted first (logged).
    """
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if path is None:
        logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr, force=True)
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        logging.basicConfig(level=logging.INFO, format=fmt, stream=f, force=True)
        logging.captureWarnings(True)
        log = logging.getLogger("pivq")
        log.info("host %s, pid %d%s", socket.gethostname(), os.getpid(), _cluster_context())
        for stale in remove_stale_temporaries(outputs):
            log.info("removed %s, left by a killed earlier attempt", stale)
        try:
            yield
        except BaseException:
            log.exception("stage failed")
            raise
        finally:
            logging.captureWarnings(False)
            root = logging.getLogger()  # leave no handler writing to the closed file (a caller that goes on)
            for handler in [h for h in root.handlers if getattr(h, "stream", None) is f]:
                root.removeHandler(handler)


def _cluster_context() -> str:
    """Which Slurm job and GPUs ran the stage (empty outside Slurm): the first thing to know about a failed job."""
    names = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES")
    return "".join(f", {name}={os.environ[name]}" for name in names if name in os.environ)


RECORDED_PACKAGES = ("pivq", "torch", "numpy", "scipy", "scikit-learn", "lpips", "torch-fidelity", "prdc")


def software_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Python, the OS and the installed version of each package (None if absent), read from package metadata so
    that nothing is imported: recorded with every run (options.json) to say what produced it."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
