"""The one device rule: a stage runs where its job's resources say, and nowhere else.

Every stage that runs a network (training and its test L1, encoding, sample shards, Figure 1's paths, the code
atlas, the toyfaces feature extractor, FID/PRDC features) takes a :class:`Job`: the experiment (or dataset) and
stage it runs for, and what its cluster job asked for (params.yaml ``resources.<preset>.<stage>``). ``gpu: 1``
means CUDA, and a job that cannot see a GPU stops before it reads any data, naming the experiment, the stage and
``CUDA_VISIBLE_DEVICES``: never a silent fall-back to hours of CPU work. ``gpu: 0`` means the CPU even where a GPU
is visible, so the embedded results stay what they are on any machine. ``cpus`` is torch's thread count, which
is also the number of threads the matcher solves images on (pivq.quantize.matching).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivq.errors import UserError

if TYPE_CHECKING:  # torch is imported where a device is made: importing this module stays cheap (the CLI)
    import torch

log = logging.getLogger(__name__)


class NoGPUError(UserError, RuntimeError):
    """A job configured for a GPU sees none."""


@dataclass(frozen=True)
class Job:
    """Where one stage runs. ``owner`` names what it runs for in messages ("experiment celebahq256")."""

    owner: str = "pivq"
    stage: str = "stage"
    gpu: int = 0  # GPUs the job asked for: 0 or 1 (every stage runs on one device)
    cpus: int = 1

    def __post_init__(self) -> None:
        if self.gpu not in (0, 1):
            raise ValueError(f"{self.owner}, stage {self.stage}: gpu = {self.gpu}; a stage runs on one device (0 or 1)")
        if self.cpus < 1:
            raise ValueError(f"{self.owner}, stage {self.stage}: cpus = {self.cpus}; at least 1")

    @classmethod
    def from_snakemake(cls, smk, owner: str) -> "Job":
        """The job of a rule's script: its rule name, ``resources.gpu`` and ``threads`` (common.smk sets both
        from params.yaml)."""
        return cls(owner=owner, stage=smk.rule, gpu=int(smk.resources.get("gpu", 0)), cpus=int(smk.threads))

    def start(self) -> torch.device:
        """Set torch's CPU threads and return the stage's device; raise NoGPUError at once if a GPU was asked
        for and none is visible. Call it first, before any data or model is read."""
        import torch

        torch.set_num_threads(self.cpus)
        if not self.gpu:
            device = torch.device("cpu")
        elif not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise NoGPUError(
                f"{self.owner}, stage {self.stage}: configured for a GPU (resources gpu: 1) but torch sees none "
                f"(CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}, torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}). Not falling back to the CPU: fix the job's GPU request, or "
                "set gpu: 0 for this stage in params.yaml to run it on the CPU on purpose."
            )
        else:
            device = torch.device("cuda", torch.cuda.current_device())  # the job's GPU: Slurm maps it to index 0
        log.info("%s, stage %s: running on %s, %d CPU thread(s)", self.owner, self.stage, describe(device), self.cpus)
        return device


def describe(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200, 139.8 GiB)`` or ``cpu``: what a log says a stage ran on."""
    import torch

    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(device)
    return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"

