"""One exception type for bad user input: the CLI prints its message alone, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(ValueError):
    """A bad value from a config, the command line or the disk; the message names it and what is valid."""


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the message names the step and the loss terms."""


def exit_code_of(command: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code, or 2 after one line ``COMMAND: error: MESSAGE`` on stderr when it raises a
    ``UserError`` (what every script does with bad input)."""
    try:
        return run()
    except UserError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
