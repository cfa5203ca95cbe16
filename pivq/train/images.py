"""Where a training step's images come from, so that the host never holds the device up between steps.

* Resident: the train split as one uint8 tensor on the device (the 256x256 sets are 5.3 GB for CelebA-HQ's 27,000
  and 11.8 GB for FFHQ's 60,000 train images), and each batch an index_select there: no host work per step.
  Chosen on a GPU when the images take at most ``RESIDENT_SHARE`` of its free memory.
* Streamed: rows read from the prepared memmap (pivq.data.prepared.read_rows, its pages dropped from the RSS
  again). On a GPU they go through pinned memory with a non-blocking copy, and when the batch order is known
  ahead (``data_order: epochs``, where a step's rows follow from the step alone) the next step's rows are read
  by a background thread while the device computes the current step. Not on the CPU, where the thread would
  compete with the step for the same cores and the GIL (toy32 ran about 25% slower with it, one torch thread).

Both give the same uint8 pixels for the same rows (tested), so a run's weights do not depend on the path.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from pivq.data.prepared import read_rows
from pivq.train.batches import BatchOrder

log = logging.getLogger(__name__)

RESIDENT_SHARE = 0.5  # at most this share of the GPU's free memory goes to resident training images
_CHUNK = 1024  # rows copied to the device at a time when making the set resident (bounds the host copy)


def fits_on_device(n_bytes: int, device: torch.device) -> bool:
    """Whether ``n_bytes`` of images may live on ``device``: a GPU with that much free memory to spare."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes <= RESIDENT_SHARE * free


class TrainImages:
    """uint8 (B, H, W, 3) batches of the train rows on ``device``, for the rows ``order(step)`` names."""

    def __init__(self, images: np.ndarray, order: BatchOrder, device: torch.device, resident: bool | None = None,
                 prefetch: bool | None = None):
        """``resident``, ``prefetch``: None decides as the module docstring says (tests force either path)."""
        self.images, self.order, self.device = images, order, device
        rows = order.rows
        n_bytes = len(rows) * int(np.prod(images.shape[1:]))
        self.resident = fits_on_device(n_bytes, device) if resident is None else resident
        self._pool: ThreadPoolExecutor | None = None
        self._next: tuple[int, Future] | None = None
        if self.resident:
            if np.any(np.diff(rows) <= 0):
                raise ValueError("the train rows must be sorted and distinct")
            self._store = torch.empty((len(rows), *images.shape[1:]), dtype=torch.uint8, device=device)
            for start in range(0, len(rows), _CHUNK):
                chunk = read_rows(images, rows[start : start + _CHUNK])
                self._store[start : start + len(chunk)] = torch.from_numpy(chunk).to(device)
            log.info("training images resident on %s: %d rows, %.2f GB", device, len(rows), n_bytes / 1e9)
        else:
            if prefetch is None:
                prefetch = device.type == "cuda"
            if prefetch and order.stateless:  # the next step's rows are known now: read them while this step runs
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pivq-batches")
            log.info("training images streamed from the memmap%s", " (next batch prefetched)" if self._pool else "")

    def _read(self, step: int) -> torch.Tensor:
        batch = torch.from_numpy(read_rows(self.images, self.order(step)))
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def __call__(self, step: int) -> torch.Tensor:
        """The batch of step ``step`` (0-based), uint8 on the device."""
        if self.resident:
            rows = np.searchsorted(self.order.rows, self.order(step))
            return self._store.index_select(0, torch.from_numpy(rows).to(self.device))
        if self._pool is None:
            batch = self._read(step)
        else:
            if self._next is not None and self._next[0] == step:
                batch = self._next[1].result()
            else:
                if self._next is not None:
                    self._next[1].result()  # never two readers at once (BatchOrder caches its epoch)
                batch = self._read(step)
            self._next = (step + 1, self._pool.submit(self._read, step + 1))
        return batch.to(self.device, non_blocking=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
