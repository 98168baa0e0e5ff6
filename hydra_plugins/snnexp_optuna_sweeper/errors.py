"""The sweeper's one error: bad sweep input, reported in one line before any trial runs."""


class SweepInputError(Exception):
    """A search space, sweeper setting or storage the sweep cannot start with; nothing has been written."""
