"""The one error a command raises to stop: its message says what was wrong and what to do."""

from __future__ import annotations


class CommandError(Exception):
    """A command cannot go on. The command line prints the message in red and exits with ``exit_code``."""

    def __init__(self, message: object, exit_code: int = 1) -> None:
        """MESSAGE names the problem and the fix; EXIT_CODE is 2 for a usage mistake, 1 otherwise."""
        super().__init__(str(message))
        self.exit_code = exit_code
