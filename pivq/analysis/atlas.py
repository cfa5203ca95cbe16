"""Code atlas: what a code means, seen by decoding test images with it swapped in (beyond the paper, issue 7).

The attribute probe (``probe.py``) names, for each binary attribute, the codes with the largest positive and
negative logistic-regression weights. The atlas takes the most predictable attributes (largest accuracy gain
over the majority baseline, the probe's own order) and, for a few test images each, decodes two code sets:

- the image's own code set (its reconstruction), and
- the same set with ``codes`` of the attribute's top codes swapped in.

Two directions per attribute:

- ``add``: the top *positive* codes swapped into test images whose label is 0 (the attribute should appear);
- ``remove``: the top *negative* codes swapped into test images whose label is 1 (the attribute should go).

Which codes come in: the probe's ranked list (``top_positive_codes`` for add, ``top_negative_codes`` for
remove), keeping only codes whose weight has the right sign and that the image does not already use (adding a
code already present would not change the code presence the probe reads, and would break a matching set);
the first ``codes`` of them are swapped in.

Which codes go out: the entries of the image's set least related to the attribute, so that removing them
should not by itself change it. A code's relation to the attribute is ``|P(code present | attribute) -
P(code present | no attribute)|`` on the *train* split (the probe stores only its top weights, not all K); the
``codes`` entries with the smallest relation leave, ties to the lower code index. A nearest-neighbour run's
set is a multiset (one code may fill many entries): then one *entry* is replaced, and the code may stay
present through its other copies; decoding takes any L indices, so the atlas is built for both quantizers.

Images: deterministic from ``seed``, per attribute and direction (``numpy.random.default_rng([seed, rank,
direction])`` with ``rank`` the attribute's place in the probe's list), drawn without replacement from the
test images with the right label that lack at least ``codes`` eligible incoming codes. An attribute with
fewer than ``images`` such test images in either direction is passed over for the next one.

The plan (which attributes, images and codes) needs no torch; ``decode_atlas`` runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pivq.analysis.probe import binary_labels, code_presence_matrix, gain_order

DIRECTIONS = ("add", "remove")
_CODE_LISTS = {"add": ("top_positive_codes", 1.0), "remove": ("top_negative_codes", -1.0)}
_DIRECTION_LABEL = {"add": 0, "remove": 1}  # the label of the images each direction edits


@dataclass
class AtlasPlan:
    """What to decode: A attributes x 2 directions x n images, each an original and a swapped code set."""

    attributes: list[str]
    accuracy: np.ndarray  # (A,) probe accuracy (mean over folds)
    accuracy_std: np.ndarray  # (A,)
    baseline: np.ndarray  # (A,) majority-class accuracy
    image_index: np.ndarray  # (A, 2, n) int64: dataset indices of the edited images
    original_codes: np.ndarray  # (A, 2, n, L) int64
    swapped_codes: np.ndarray  # (A, 2, n, L) int64
    swapped_in: np.ndarray  # (A, 2, n, m) int64: the codes swapped in, in the order they were taken
    swapped_out: np.ndarray  # (A, 2, n, m) int64: the codes they replaced
    weights_in: np.ndarray  # (A, 2, n, m) float: the probe's weights of the codes swapped in


def known_labels(column: pd.Series) -> np.ndarray:
    """0/1 labels, -1 where unknown (NaN); ValueError naming the column if it holds anything else."""
    known = column.notna().to_numpy()
    labels = np.full(len(column), -1, dtype=np.int64)
    values = binary_labels(column[known])  # the probe's test of "binary"
    if values is None:
        raise ValueError(f"attribute {column.name!r} is not binary (values {sorted(set(column[known]))[:5]})")
    labels[known] = values
    return labels


def code_association(codes: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    """(K,) P(code present | label 1) - P(code present | label 0) over the rows of ``codes`` (N, L); rows with
    label -1 are left out, and a class with no rows counts as presence 0. Repeats in a row count once."""
    presence = code_presence_matrix(np.asarray(codes), K)  # the probe's features
    rates = [np.asarray(presence[labels == value].mean(axis=0)).ravel() if (labels == value).any() else np.zeros(K)
             for value in (1, 0)]
    return rates[0] - rates[1]


def swap_codes(code_set: np.ndarray, incoming: list[int], relation: np.ndarray, count: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swap the first ``count`` codes of ``incoming`` that ``code_set`` lacks into it, replacing the ``count``
    entries with the smallest ``relation`` (ties to the lower code index, then the earlier entry).

    Returns (new set (L,), codes swapped in (count,), codes swapped out (count,)); ValueError if fewer than
    ``count`` incoming codes are absent from the set."""
    code_set = np.asarray(code_set, dtype=np.int64)
    if count > len(code_set):
        raise ValueError(f"cannot swap {count} codes into a set of {len(code_set)}")
    fresh = [int(c) for c in incoming if c not in code_set]
    fresh = list(dict.fromkeys(fresh))[:count]  # a code listed twice comes in once
    if len(fresh) < count:
        raise ValueError(f"only {len(fresh)} of the incoming codes {list(incoming)} are absent from the set, "
                         f"{count} needed")
    order = np.lexsort((np.arange(len(code_set)), code_set, relation[code_set]))  # last key sorts first
    out = order[:count]
    new = code_set.copy()
    new[out] = fresh
    return new, np.array(fresh, dtype=np.int64), code_set[out]


def _check_probe(probe: dict, columns: pd.Index, K: int) -> list[dict]:
    """The probe's attribute rows, checked against the dataset and the codebook (errors name what is wrong)."""
    rows = probe.get("attributes")
    if not isinstance(rows, list) or not rows:
        raise ValueError("probe.json lists no attributes")
    for i, row in enumerate(rows):
        name = row.get("name")
        if name not in columns:
            raise KeyError(f"probe.json attribute {name!r} (attributes[{i}]) is not an attribute of the dataset")
        for key, _ in _CODE_LISTS.values():
            if key not in row:
                raise ValueError(f"probe.json attribute {name!r} has no {key} (a probe.json from an older pivq?)")
            for entry in row[key]:
                code = entry["code"]
                if not (isinstance(code, int) and 0 <= code < K):
                    raise ValueError(f"probe.json attribute {name!r}: {key} holds code {code!r}, outside the "
                                     f"codebook 0..{K - 1}")
    return rows


def plan_atlas(codes: np.ndarray, split: np.ndarray, attributes: pd.DataFrame, probe: dict, K: int,
               n_attributes: int, n_images: int, n_codes: int, seed: int) -> AtlasPlan:
    """Choose attributes, images and swaps (the rules in the module docstring).

    ``codes`` (N, L), ``split`` (N,) and ``attributes`` (N rows) are of the same images, by position; the
    images come from the test split, the code-attribute relation from the train split.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or len(codes) != len(split) or len(codes) != len(attributes):
        raise ValueError(f"codes {codes.shape}, split ({len(split)},) and attributes ({len(attributes)} rows) "
                         "must describe the same images")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"codes must lie in [0, {K}), got range [{codes.min()}, {codes.max()}]")
    if n_codes > codes.shape[1]:
        raise ValueError(f"atlas codes = {n_codes} exceeds the set size L = {codes.shape[1]}")
    rows = _check_probe(probe, attributes.columns, K)
    ranked = sorted(enumerate(rows), key=lambda ir: gain_order(ir[1]))  # probe.json's order, made sure of
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")

    chosen, passed_over = [], []
    for rank, row in ranked:
        if len(chosen) == n_attributes:
            break
        labels = known_labels(attributes[row["name"]].reset_index(drop=True))
        relation = np.abs(code_association(codes[train], labels[train], K))
        per_direction = []
        for d, direction in enumerate(DIRECTIONS):
            key, sign = _CODE_LISTS[direction]
            incoming = [(int(e["code"]), float(e["weight"])) for e in row[key] if sign * e["weight"] > 0]
            eligible = [i for i in test[labels[test] == _DIRECTION_LABEL[direction]]
                        if sum(c not in codes[i] for c, _ in incoming) >= n_codes]
            if len(eligible) < n_images:
                passed_over.append(f"{row['name']} ({direction}: {len(eligible)} eligible test images)")
                break
            rng = np.random.default_rng([seed, rank, d])
            picked = rng.choice(np.array(eligible, dtype=np.int64), size=n_images, replace=False)
            weight_of = dict(incoming)
            swaps = [swap_codes(codes[i], [c for c, _ in incoming], relation, n_codes) for i in picked]
            per_direction.append({
                "image_index": picked,
                "original_codes": codes[picked],
                "swapped_codes": np.stack([s[0] for s in swaps]),
                "swapped_in": np.stack([s[1] for s in swaps]),
                "swapped_out": np.stack([s[2] for s in swaps]),
                "weights_in": np.array([[weight_of[int(c)] for c in s[1]] for s in swaps]),
            })
        else:
            chosen.append((row, per_direction))
    if not chosen:
        raise ValueError(f"no attribute has {n_images} eligible test images in both directions; passed over: "
                         + "; ".join(passed_over))

    def stack(key: str) -> np.ndarray:
        return np.stack([np.stack([d[key] for d in dirs]) for _, dirs in chosen])

    return AtlasPlan(
        attributes=[row["name"] for row, _ in chosen],
        accuracy=np.array([row["accuracy_mean"] for row, _ in chosen]),
        accuracy_std=np.array([row.get("accuracy_std", np.nan) for row, _ in chosen]),
        baseline=np.array([row["baseline"] for row, _ in chosen]),
        **{key: stack(key) for key in ("image_index", "original_codes", "swapped_codes", "swapped_in",
                                       "swapped_out", "weights_in")},
    )


def decode_atlas(model, plan: AtlasPlan, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Decode every original and swapped set of ``plan`` with ``model`` (a PIVQ) in batches.

    Returns the atlas arrays (``atlas_arrays``): uint8 images (A, 2, n, H, W, 3) under ``original`` and
    ``swapped`` beside the plan's arrays."""
    import torch

    from pivq.model.pixels import to_uint8

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    shape = plan.original_codes.shape[:-1]
    sets = np.concatenate([plan.original_codes.reshape(-1, plan.original_codes.shape[-1]),
                           plan.swapped_codes.reshape(-1, plan.swapped_codes.shape[-1])])
    dev = next(model.parameters()).device
    decoded = []
    with torch.no_grad():
        for start in range(0, len(sets), batch_size):
            batch = torch.from_numpy(sets[start:start + batch_size]).to(dev)
            decoded.append(to_uint8(model.decode_indices(batch), model.cfg.pixel_range))
    images = np.concatenate(decoded)
    half = len(images) // 2
    return {
        "original": images[:half].reshape(*shape, *images.shape[1:]),
        "swapped": images[half:].reshape(*shape, *images.shape[1:]),
        **atlas_arrays(plan),
    }


def atlas_arrays(plan: AtlasPlan) -> dict[str, Any]:
    """The plan as the arrays of code_atlas.npz (beside the decoded images)."""
    return {
        "attributes": np.array(plan.attributes, dtype=str),
        "directions": np.array(DIRECTIONS, dtype=str),
        "accuracy": plan.accuracy,
        "accuracy_std": plan.accuracy_std,
        "baseline": plan.baseline,
        "image_index": plan.image_index,
        "original_codes": plan.original_codes,
        "swapped_codes": plan.swapped_codes,
        "swapped_in": plan.swapped_in,
        "swapped_out": plan.swapped_out,
        "weights_in": plan.weights_in,
    }
