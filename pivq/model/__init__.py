"""The PI-VQ model and its checkpoints (read by training, sampling and evaluation alike)."""

from pivq.model.pivq import PIVQ, ModelConfig

__all__ = ["PIVQ", "ModelConfig"]
