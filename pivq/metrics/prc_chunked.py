"""torch-fidelity's k-NN precision/recall (Kynkaenniemi et al. 2019), exactly, in batch_size x batch_size memory.

``torch_fidelity.metric_prc.prc_features_to_metric(..., save_cpu_ram=True)`` splits the rows of each distance
matrix into blocks of ``prc_batch_size`` but, for each row block, concatenates its distances to *all* N points
before ``kthvalue`` or ``(d <= radii).any(dim=1)``: a batch_size x N float32 block, plus the concatenation's
copy and kthvalue's, on the host even when the distances were computed on a GPU (9.5 GB at N = 50,000).

Here the same four passes run over the same tiles, and only per-row state outlives a tile:

* the k+1 smallest distances seen so far of each row (the radii passes), or
* whether some column so far has had its distance <= that column's radius (the precision and recall passes).

Why the numbers are bit-identical (``==``). Rows and columns are cut by ``Tensor.split(batch_size)`` as
torch-fidelity cuts them, and each tile is ``torch.cdist(row_block, col_block)`` with torch-fidelity's operand
order in each pass (radii of the fakes: fake x fake; recall: real x fake, compared with the fakes' radii;
radii of the reals: real x real; precision: fake x real, compared with the reals' radii). cdist of the same
operands gives the same floats (its mm-or-not choice and the BLAS call depend only on them and on the thread
count, the same within a process), so every distance is torch-fidelity's. The k+1 smallest of a row are kept
by ``topk(largest=False)`` over the running smallest and each tile's own smallest; the k+1 smallest of a
union are among the k+1 smallest of each part, so the final ``kthvalue(k + 1)`` over them is the same order
statistic of the same multiset of floats as kthvalue over the whole row (ties and the self-distance included;
NaN sorts last in both; only the sign of a zero radius could differ, and ``<=`` does not see it). The comparison
is the same ``<=`` of the same floats, its "any" over column tiles an OR, and the 0/1 flags are averaged as
torch-fidelity averages them (float32 ``mean`` on the CPU; the sum of 0/1 values is exact).

Device: the tiles, their comparisons and the per-row state stay on the features' device; only the per-row
flags (N booleans) come to the host for the mean. On a GPU the k-th values are those torch-fidelity finds on the
host copies of the same tiles, so the result should be torch-fidelity's on the same GPU too (a test checks it where
CUDA is available); it may differ from the CPU's, whose cdist rounds differently.

Memory on top of the features: one tile (batch_size^2 floats; cdist's own temporaries are a tile's and the
operands' size), the comparison's booleans for ``COMPARE_ROWS`` rows of a tile, the running k+1 smallest of a
row block, and N radii or flags per set.
"""

from __future__ import annotations

import torch

__all__ = ["precision_recall"]

COMPARE_ROWS = 1024  # rows of a tile compared at once: bounds the boolean temporary to COMPARE_ROWS x batch_size


def _kth_smallest(rows: torch.Tensor, cols: torch.Tensor, kth: int, batch_size: int) -> torch.Tensor:
    """For each row of ``rows``, the ``kth`` smallest of its distances to all of ``cols`` (torch-fidelity's
    ``calc_cdist_part(row_block, cols).kthvalue(kth).values``, row block by row block)."""
    if cols.shape[0] < kth:
        raise ValueError(f"need at least {kth} points for the {kth}-th nearest distance, got {cols.shape[0]}")
    out = []
    for row_block in rows.split(batch_size):
        best = None  # (rows of the block, <= kth): the smallest distances seen so far, unordered
        for col_block in cols.split(batch_size):
            d = torch.cdist(row_block, col_block)
            smallest = d.topk(min(kth, d.shape[1]), dim=1, largest=False, sorted=False).values
            del d
            if best is not None:
                merged = torch.cat([best, smallest], dim=1)
                smallest = merged.topk(min(kth, merged.shape[1]), dim=1, largest=False, sorted=False).values
            best = smallest
        out.append(best.kthvalue(kth, dim=1).values)
    return torch.cat(out)


def _within_some_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    """Per point, whether its distance to some centre is <= that centre's radius (torch-fidelity's
    ``(calc_cdist_part(point_block, centres) <= radii).any(dim=1)``, row block by row block), as bools."""
    out = []
    for row_block in points.split(batch_size):
        hit = torch.zeros(row_block.shape[0], dtype=torch.bool, device=row_block.device)
        for col_block, col_radii in zip(centres.split(batch_size), radii.split(batch_size)):
            d = torch.cdist(row_block, col_block)
            for start in range(0, d.shape[0], COMPARE_ROWS):
                part = slice(start, start + COMPARE_ROWS)
                hit[part] |= (d[part] <= col_radii).any(dim=1)
            del d
        out.append(hit)
    return torch.cat(out)


@torch.no_grad()
def precision_recall(fake: torch.Tensor, real: torch.Tensor, neighborhood: int = 3,
                     batch_size: int = 10_000) -> tuple[float, float]:
    """(precision, recall) of ``fake`` (generated, torch-fidelity's features_1) against ``real`` (features_2):
    equal to ``prc_features_to_metric(fake, real, prc_neighborhood=neighborhood, prc_batch_size=batch_size,
    save_cpu_ram=True)``'s, on the tensors' device, holding one batch_size x batch_size tile of distances at a time.

    Precision: the share of fakes within some real's ball (radius: its distance to its ``neighborhood``-th nearest
    real, itself counted as the 0th); recall: the share of reals within some fake's ball.
    """
    for name, f in (("fake", fake), ("real", real)):
        if not torch.is_tensor(f) or f.dim() != 2:
            raise ValueError(f"{name} features must be a 2-D tensor (N, D), got {type(f).__name__} "
                             f"{tuple(getattr(f, 'shape', ()))}")
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"feature dimensions differ: fake {fake.shape[1]}, real {real.shape[1]}")
    if fake.device != real.device:
        raise ValueError(f"fake and real features are on different devices: {fake.device}, {real.device}")
    if neighborhood < 1 or batch_size < 1:
        raise ValueError(f"neighborhood and batch_size must be >= 1, got {neighborhood} and {batch_size}")
    kth = neighborhood + 1  # the self-distance (0) is the smallest of a point's distances to its own set
    radii_fake = _kth_smallest(fake, fake, kth, batch_size)
    recall = _within_some_ball(real, fake, radii_fake, batch_size)
    del radii_fake
    radii_real = _kth_smallest(real, real, kth, batch_size)
    precision = _within_some_ball(fake, real, radii_real, batch_size)
    # torch-fidelity averages float32 0/1 flags on the host; the sum is an exact integer, the division the same
    return precision.cpu().float().mean().item(), recall.cpu().float().mean().item()
