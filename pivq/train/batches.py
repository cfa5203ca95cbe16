"""Which training images each step reads: a schedule's ``data_order``.

* ``"epochs"`` (Unleashing Transformers, utils/data_utils.py lines 174-181: ``DataLoader(shuffle=True,
  drop_last=True)``, cycled): each epoch is a fresh permutation of the train split, cut into consecutive batches;
  the last partial batch is dropped, so an epoch is ``len(rows) // batch_size`` steps. Epoch e's permutation is
  drawn from its own generator, seeded with (seed, e): the rows of any step follow from the step alone, so a
  resumed run reads exactly what an uninterrupted one would, with nothing to checkpoint.
* ``"replacement"``: every batch is drawn independently, with replacement, from the batch generator (``gen``).

Each batch's rows are sorted: the memmap is read in file order, and the loss is a mean over the batch.
"""

from __future__ import annotations

import numpy as np
import torch

DATA_ORDERS = ("epochs", "replacement")


class BatchOrder:
    def __init__(self, rows: np.ndarray, batch_size: int, order: str, seed: int, gen: torch.Generator):
        if order not in DATA_ORDERS:
            raise ValueError(f"data_order: {order!r} is not one of {list(DATA_ORDERS)}")
        if order == "epochs" and len(rows) < batch_size:
            raise ValueError(f"data_order epochs drops the last partial batch, and {len(rows)} train images make "
                             f"no full batch of batch_size = {batch_size}: lower the schedule's batch_size")
        self.rows, self.batch_size, self.order, self.seed, self.gen = rows, batch_size, order, seed, gen
        self.steps_per_epoch = len(rows) // batch_size
        self._epoch, self._perm = -1, None

    @property
    def stateless(self) -> bool:
        """Whether a step's rows follow from the step alone (so they may be read ahead of time)."""
        return self.order == "epochs"

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """Positions into ``rows`` in epoch ``epoch``'s order."""
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.rows))

    def __call__(self, step: int) -> np.ndarray:
        """The sorted train rows that step ``step`` (0-based) reads."""
        if self.order == "replacement":
            picks = torch.randint(len(self.rows), (self.batch_size,), generator=self.gen).numpy()
            return np.sort(self.rows[picks])
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:  # one permutation per epoch, not per step
            self._epoch, self._perm = epoch, self.epoch_permutation(epoch)
        start = position * self.batch_size
        return np.sort(self.rows[self._perm[start : start + self.batch_size]])
