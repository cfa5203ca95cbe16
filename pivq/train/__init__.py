"""Training: the loop, its schedule and its resumable state."""

from pivq.train.loop import LOSSES, Preempted, Schedule, train, write_training_metrics

__all__ = ["LOSSES", "Preempted", "Schedule", "train", "write_training_metrics"]
