"""One exception type for bad user input: the CLI prints its message alone, without a traceback."""


class UserError(ValueError):
    """A bad value from a config, the command line or the disk; the message names it and what is valid."""


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the message names the step and the loss terms."""
