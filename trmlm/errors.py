"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class TRMError(Exception):
    """Bad input from the user (malformed puzzle, bad config, missing checkpoint, ...).

    The message must name the problem in one line; the CLI prints ``error: <message>`` and
    exits with code 2, never a traceback.
    """
