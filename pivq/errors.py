"""Errors a user fixes (a setting, a file, a job's GPU, a second run), as opposed to bugs: the CLI prints them as
one line naming what to fix, not as a traceback. This module imports nothing, so the CLI can catch them without
importing torch."""


class UserError(Exception):
    """Mixed into the exceptions whose message says what to fix: pivq.device.NoGPUError,
    pivq.train.lock.RunLockedError, pivq.weights.WeightsFileError."""
