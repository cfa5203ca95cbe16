"""Interpolation-based sampling (paper section 3.5, Algorithm 1) and its sharded generation.

A new image is the decoding of a new code set built from the code sets of two dataset images: their
intersection, topped up to L codes by a uniform draw without replacement from their symmetric difference.
One decoder pass per batch; no prior over codes is learned.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from pivq.io import atomic_path
from pivq.model import PIVQ
from pivq.model.pixels import to_uint8


def _check_set(codes: torch.Tensor, name: str) -> None:
    if codes.ndim != 1 or codes.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be a 1-D integer tensor of codebook indices, got {codes.dtype} "
                         f"{tuple(codes.shape)}")
    if torch.unique(codes).numel() != codes.numel():
        raise ValueError(f"{name} holds repeated codes: Algorithm 1 needs a set (matching quantization)")


def _split(codes_a: torch.Tensor, codes_b: torch.Tensor):
    _check_set(codes_a, "codes_a")
    _check_set(codes_b, "codes_b")
    if len(codes_a) != len(codes_b):
        raise ValueError(f"code sets of different sizes: {len(codes_a)} and {len(codes_b)}")
    in_b = torch.isin(codes_a, codes_b)
    return codes_a[in_b], codes_a[~in_b], codes_b[~torch.isin(codes_b, codes_a)]  # C_c, R_a, R_b


def interpolate(codes_a: torch.Tensor, codes_b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1: C_c = C_a & C_b, then L - |C_c| codes drawn uniformly without replacement from C_a ^ C_b."""
    common, only_a, only_b = _split(codes_a, codes_b)
    exclusive = torch.cat([only_a, only_b])
    draw = torch.randperm(len(exclusive), generator=generator)[: len(codes_a) - len(common)]
    return torch.cat([common, exclusive[draw]])


def _check_code_rows(codes: np.ndarray, rows: np.ndarray, codebook_size: int) -> None:
    """Algorithm 1's preconditions on the training code sets ``codes[rows]``, checked at once."""
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"training codes must be (N, L) integer codebook indices, got {codes.dtype} {codes.shape}")
    sorted_rows = np.sort(codes[rows], axis=1)
    if len(rows) and not (sorted_rows[:, 0].min() >= 0 and sorted_rows[:, -1].max() < codebook_size):
        raise ValueError(f"training codes hold indices outside the codebook [0, {codebook_size})")
    repeated = np.flatnonzero((sorted_rows[:, 1:] == sorted_rows[:, :-1]).any(axis=1))
    if len(repeated):
        raise ValueError(f"training code set {int(rows[repeated[0]])} holds repeated codes: Algorithm 1 needs a "
                         "set (matching quantization)")


def _interpolate_rows(codes_a: np.ndarray, codes_b: np.ndarray, generators: list[torch.Generator]) -> np.ndarray:
    """Algorithm 1 for B pairs of code sets (B, L) at once: row i equals, element for element and in order,
    ``interpolate(codes_a[i], codes_b[i], generators[i])`` (same masks, same concatenation order, the same one
    ``torch.randperm`` draw per sample), without its per-sample tensor operations. Rows must be checked sets."""
    n, length = codes_a.shape
    rows = np.arange(n)[:, None]
    size = int(max(codes_a.max(initial=0), codes_b.max(initial=0))) + 1
    member = np.zeros((n, size), dtype=bool)
    member[rows, codes_b] = True
    in_b = member[rows, codes_a]  # codes_a[i, j] in C_b
    member[:] = False
    member[rows, codes_a] = True
    in_a = member[rows, codes_b]
    # Stable sorts keep each part in its original order: a -> [C_c, R_a], b -> [R_b, ...], as _split's masks do.
    a_sorted = np.take_along_axis(codes_a, np.argsort(~in_b, axis=1, kind="stable"), axis=1)
    b_sorted = np.take_along_axis(codes_b, np.argsort(in_a, axis=1, kind="stable"), axis=1)
    n_common = in_b.sum(axis=1)
    out = np.empty((n, length), dtype=np.int64)
    for i, (c, generator) in enumerate(zip(n_common.tolist(), generators)):
        rest = length - c
        exclusive = np.concatenate([a_sorted[i, c:], b_sorted[i, :rest]])
        draw = torch.randperm(len(exclusive), generator=generator)[:rest].numpy()
        out[i, :c] = a_sorted[i, :c]
        out[i, c:] = exclusive[draw]
    return out


def smooth_path(codes_a: torch.Tensor, codes_b: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """The smooth interpolation of section 3.5 for one random pair of permutations R'_a, R'_b.

    C^t = C_c + first t of R'_a + last |R| - t of R'_b; returned for t = |R|, ..., 0, i.e. from C_a to C_b
    (the endpoints included), one code swapped per step.
    """
    common, only_a, only_b = _split(codes_a, codes_b)
    ra = only_a[torch.randperm(len(only_a), generator=generator)]
    rb = only_b[torch.randperm(len(only_b), generator=generator)]
    r = len(ra)
    return [torch.cat([common, ra[:t], rb[t:]]) for t in range(r, -1, -1)]


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator of sample ``index``: each sample depends only on (seed, index), not on sharding."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_pairs(n_images: int, n: int, seed: int) -> np.ndarray:
    """n pairs (a, b) of distinct image positions in [0, n_images), uniform over ordered pairs."""
    if n_images < 2:
        raise ValueError(f"interpolation needs at least 2 training images, got {n_images}")
    rng = np.random.default_rng(seed)
    a = rng.integers(n_images, size=n)
    b = (a + rng.integers(1, n_images, size=n)) % n_images  # uniform over the others
    return np.stack([a, b], axis=1)


def shard_range(n: int, shards: int, shard: int) -> range:
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return range(shard * n // shards, (shard + 1) * n // shards)


@torch.no_grad()
def generate_shard(model: PIVQ, train_codes: np.ndarray, n: int, shards: int, shard: int, seed: int,
                   batch_size: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Samples ``shard_range(n, shards, shard)`` of an n-sample set: images uint8 (m, H, W, 3), the pairs of
    training-image positions they interpolate, and their global sample indices."""
    dev = next(model.parameters()).device
    pairs = draw_pairs(len(train_codes), n, seed)
    indices = np.array(shard_range(n, shards, shard))
    _check_code_rows(train_codes, np.unique(pairs[indices]), model.cfg.codebook_size)
    out = np.empty((len(indices), model.cfg.resolution, model.cfg.resolution, 3), dtype=np.uint8)
    for start in tqdm(range(0, len(indices), batch_size), desc=f"sample shard {shard}", disable=not progress,
                      mininterval=5):
        batch = indices[start : start + batch_size]
        # the sets of interpolate(), built for the whole batch at once (per-sample tensor ops cost ~15% of a
        # toy32 decoder pass on CPU); sample i's draw still comes from its own generator
        sets = _interpolate_rows(np.asarray(train_codes[pairs[batch, 0]], dtype=np.int64),
                                 np.asarray(train_codes[pairs[batch, 1]], dtype=np.int64),
                                 [sample_generator(seed, int(i)) for i in batch])
        decoded = model.decode_indices(torch.from_numpy(sets).to(dev))
        out[start : start + len(batch)] = to_uint8(decoded, model.cfg.pixel_range)
    return {"images": out, "pairs": pairs[indices], "sample_index": indices}


def save_shard(path: str | Path, shard: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **shard)


def _load_member(paths: list[str | Path], member: str) -> np.ndarray:
    """One array of every given shard, concatenated in order."""
    parts = []
    for p in paths:
        try:
            with np.load(p) as f:
                parts.append(f[member])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # BadZipFile: a failed CRC check
            raise ValueError(f"{p}: not a readable sample shard ({err}); delete it and rerun its job") from None
    return np.concatenate(parts)


def load_sample_images(paths: list[str | Path]) -> np.ndarray:
    """All images of the given shards, in order, as one uint8 array."""
    return _load_member(paths, "images")


def load_shard_pairs(paths: list[str | Path]) -> np.ndarray:
    """The (a, b) training-image positions of every sample of the given shards, in the order of their images."""
    return _load_member(paths, "pairs")


def check_shards(paths: list[str | Path], experiment: str | None = None) -> str:
    """The shards of one sample set, checked before their images are read: each records the same experiment
    and run (the model.pt that decoded it) and the set size n, and their sample indices cover 0..n-1 once each.
    ``experiment`` (the reading stage's) must be the one they record. Returns the run; raises naming the shard."""
    seen, first = [], None
    for path in map(Path, paths):
        try:
            with np.load(path) as f:
                if not {"experiment", "run", "n", "sample_index"} <= set(f.files):
                    raise ValueError(f"{path}: a sample shard without its experiment, run and set size (written by "
                                     "an older pivq?); delete it and rerun its job")
                record = {"experiment": str(f["experiment"]), "run": str(f["run"]), "n": int(f["n"])}
                seen.append(f["sample_index"])
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable sample shard ({err}); delete it and rerun its job") from None
        if experiment is not None and record["experiment"] != experiment:
            raise ValueError(f"{path} holds samples of experiment {record['experiment']!r}, not {experiment!r}")
        if first is None:
            first = (path, record)
        elif record != first[1]:
            differ = "; ".join(f"{k} {record[k]!r} there, {first[1][k]!r} in {first[0]}" for k in record
                               if record[k] != first[1][k])
            raise ValueError(f"{path} is not of the same sample set as {first[0]} ({differ})")
    if first is None:
        raise ValueError("no sample shards given")
    indices = np.sort(np.concatenate(seen))
    if not np.array_equal(indices, np.arange(first[1]["n"])):
        raise ValueError(f"the shards {[str(p) for p in paths]} hold {len(indices)} samples, not the set's "
                         f"{first[1]['n']} once each (a shard missing, repeated or of other sample settings)")
    return first[1]["run"]


SHARD_IMAGES_MEMBER = "images.npy"  # the member np.savez writes for a shard's "images"
# what zipfile and numpy raise on a damaged shard: BadZipFile on a failed CRC-32 check, EOFError on a short member
_SHARD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _unreadable(path: Path, why: object) -> ValueError:
    return ValueError(f"{path}: not a readable sample shard ({why}); delete it and rerun its job")


def _open_shard_images(path: Path) -> tuple[zipfile.ZipFile, IO[bytes], tuple[int, ...]]:
    """(the shard's zip, its images.npy member positioned at the first row, the array's shape); the header is
    checked: uint8, 4-D (m, H, W, 3), C order. Raises what zipfile and numpy raise; the caller names the file."""
    archive = zipfile.ZipFile(path)
    try:
        member = archive.open(SHARD_IMAGES_MEMBER)
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"{SHARD_IMAGES_MEMBER} is a .npy file of format version {version}, expected 1.0 or 2.0")
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran_order:
            order = "Fortran" if fortran_order else "C"
            raise ValueError(f"{SHARD_IMAGES_MEMBER} is {dtype} {shape} in {order} order, expected uint8 "
                             "(m, H, W, 3) in C order")
    except BaseException:
        archive.close()
        raise
    return archive, member, tuple(int(s) for s in shape)


class ShardImages:
    """The images of sample shards, in shard order, read a batch at a time: ``ShardImages(paths).batches(200)``.

    :func:`load_sample_images` holds every image at once (50k samples at 256x256 are 9.8 GB); this reads each
    shard's images.npy member in place through zipfile (np.savez stores it uncompressed), so what it holds is one
    batch. The headers are read on construction: the count and the image shape are known, and a truncated or
    foreign shard or one of another image shape is refused by name, before any image is read. Each member is read
    to its end, so zipfile's CRC-32 check still refuses a flipped byte; it fires when that shard's last row is
    read, after earlier batches were handed out: a caller writes nothing until its pass is complete.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: list[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no sample shards given")
        self.counts: list[int] = []
        for path in self.paths:
            try:
                archive, member, shape = _open_shard_images(path)
            except _SHARD_ERRORS as err:
                raise _unreadable(path, err) from None
            member.close()
            archive.close()
            if self.counts and shape[1:] != self.image_shape:
                raise ValueError(f"{path}: sample images of shape {shape[1:]}, but {self.paths[0]} holds "
                                 f"{self.image_shape}; all shards of a sample set have one image shape")
            self.image_shape = shape[1:]
            self.counts.append(shape[0])
        self.shape = (sum(self.counts), *self.image_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive uint8 batches (b, H, W, 3), in order, each of ``batch_size`` rows but the last: a batch
        spans shards, so the boundaries are those of the shards' concatenation (the features a network gives
        can depend on them)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        row_bytes = int(np.prod(self.image_shape))
        remaining, out, filled = len(self), None, 0
        for path, count in zip(self.paths, self.counts):
            try:
                archive, member, shape = _open_shard_images(path)
            except _SHARD_ERRORS as err:
                raise _unreadable(path, err) from None
            with archive, member:
                if shape != (count, *self.image_shape):
                    raise _unreadable(path, f"{SHARD_IMAGES_MEMBER} is now {shape}, it was {(count, *self.image_shape)}"
                                            " when opened")
                left = count
                while left:
                    if out is None:
                        out, filled = np.empty((min(batch_size, remaining), *self.image_shape), np.uint8), 0
                    take = min(left, len(out) - filled)
                    want = take * row_bytes
                    try:
                        got = member.readinto(memoryview(out[filled : filled + take]).cast("B"))
                    except _SHARD_ERRORS as err:
                        raise _unreadable(path, err) from None
                    if got != want:
                        raise _unreadable(path, f"{SHARD_IMAGES_MEMBER} ends {want - got} bytes short of its "
                                                f"{count} images")
                    filled, left, remaining = filled + take, left - take, remaining - take
                    if filled == len(out):
                        yield out
                        out = None
                try:  # at the member's end: zipfile has checked its CRC-32 (this read checks an empty one)
                    trailing = member.read(1)
                except _SHARD_ERRORS as err:
                    raise _unreadable(path, err) from None
                if trailing:
                    raise _unreadable(path, f"{SHARD_IMAGES_MEMBER} holds bytes after its {count} images")


@torch.no_grad()
def interpolation_paths(model: PIVQ, codes: np.ndarray, images: np.ndarray, pairs: int, paths: int, steps: int,
                        seed: int) -> np.ndarray:
    """Figure 1: for ``pairs`` random image pairs, ``paths`` smooth paths each, ``steps`` decoded code sets
    evenly spaced along the path (its two ends included), with the two source images at both ends.

    Returns uint8 (pairs, paths, steps + 2, H, W, 3). ``codes`` and ``images`` are of the same images.
    """
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    chosen = torch.randperm(len(codes), generator=gen)[: 2 * pairs].reshape(pairs, 2).numpy()
    rows = []
    for a, b in chosen:
        row = []
        for _ in range(paths):
            path = smooth_path(torch.from_numpy(codes[a]).long(), torch.from_numpy(codes[b]).long(), gen)
            pick = np.linspace(0, len(path) - 1, steps).round().astype(int)
            decoded = model.decode_indices(torch.stack([path[i] for i in pick]).to(dev))
            decoded = to_uint8(decoded, model.cfg.pixel_range)
            row.append(np.concatenate([images[a][None], decoded, images[b][None]]))
        rows.append(np.stack(row))
    return np.stack(rows)
