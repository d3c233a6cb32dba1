"""The errors every layer may raise (a CLI error is not the CLI's private class)."""


class CliError(Exception):
    """A one-line message for the user; the command exits with status 2."""


class UnsupportedDependency(CliError, RuntimeError):
    """Installed faust-streaming / aiokafka code that corridor's run-time patches
    (streams.worker.faust_patches) were not written against. A CliError, so `corridor worker` shows
    its one line and exits with status 2; a RuntimeError, as the guard raised before it had a
    class of its own."""
