"""The one error type a user can cause; the CLI prints its message without a traceback."""


class RanksweepError(Exception):
    """A problem with the user's input or environment, phrased as one sentence that says what to do."""


class TrainingDiverged(RanksweepError):
    """A training whose loss or weights stopped being finite numbers; nothing of it was saved."""
