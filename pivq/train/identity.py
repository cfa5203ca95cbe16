"""A training run's identity: everything that changes its weights. A checkpoint resumes only its own identity.

The identity is the resolved experiment's model, quantizer and schedule (seed, learning rate, batch size, EMA
rate, T_q, the loss recipe, ...) and the sha256 of every file of the prepared dataset. Four schedule settings are
left out because they do not change the weights of the steps a run has taken: ``steps`` (a longer run continues
the shorter one: raising it resumes; a checkpoint beyond a lowered ``steps`` is another run), ``log_every``,
``image_every`` and ``checkpoint_every``. Names (of the experiment, the presets, the dataset) are left out too:
what they stand for is in, their spelling is not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

NOT_WEIGHTS = ("steps", "log_every", "image_every", "checkpoint_every")  # schedule settings outside the identity


def run_identity(experiment: dict[str, Any], dataset_files: dict[str, str]) -> dict[str, Any]:
    """The identity of training ``experiment`` (a training spec) on the prepared set whose manifest lists
    ``dataset_files`` (file name -> sha256)."""
    schedule = {k: v for k, v in experiment["schedule"].items() if k not in NOT_WEIGHTS}
    return {"model": experiment["model"], "quantizer": experiment["quantizer"], "schedule": schedule,
            "dataset_files": dict(dataset_files)}


def identity_hash(identity: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the identity's canonical JSON: the run's name in model.pt, codes and shards."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def identity_diff(found: dict[str, Any], expected: dict[str, Any], prefix: str = "") -> list[str]:
    """Each dotted key whose value differs, with both values: ``schedule.lr_per_sample 2.5e-05 there, 4e-05 here``."""
    out = []
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key), expected.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} there, {b!r} here")
    return out
