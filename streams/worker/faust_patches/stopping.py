"""The worker class corridor gives faust (its `Worker` setting): faust's own, which also exits by
itself when SIGTERM has not stopped it in time. It overrides faust's private
`Worker._on_sigterm`, so its source is fingerprinted in the package's UPSTREAM table."""
from __future__ import annotations

import logging
import os
import threading

import faust

log = logging.getLogger("corridor")

#: The status of a worker that SIGTERM did not stop in time (128 + SIGTERM, as a shell reports it).
EXIT_STOP_TIMEOUT = 143


class StoppingWorker(faust.Worker):
    """faust's Worker, which also exits by itself when a SIGTERM has not stopped it within
    `stop_timeout` seconds (a broker that is gone keeps faust's shutdown waiting forever, and every
    stop then waited for SIGKILL)."""

    stop_timeout: float = 20.0

    def _on_sigterm(self) -> None:
        timer = threading.Timer(self.stop_timeout, _exit_after_stop_timeout, (self.stop_timeout,))
        timer.daemon = True
        timer.start()
        super()._on_sigterm()


def _exit_after_stop_timeout(seconds: float) -> None:
    log.critical("did not stop within %g s of SIGTERM (is the broker gone?); exiting now: what was "
                 "not committed is processed again by the next owner (CORRIDOR_STOP_TIMEOUT_SECONDS)",
                 seconds)
    logging.shutdown()
    os._exit(EXIT_STOP_TIMEOUT)
