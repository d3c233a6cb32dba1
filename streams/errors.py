"""The errors every layer may raise (a CLI error is not the CLI's private class)."""


class CliError(Exception):
    """A one-line message for the user; the command exits with status 2."""
