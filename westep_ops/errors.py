"""The one exception type that reaches the user as a single clear line."""


class WestepError(Exception):
    """A problem the user can act on: shown as one line, never as a traceback.

    ``exit_code`` 2 means bad input or set-up (config, DSN, unknown action); other codes
    are chosen by the command that raises it.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
