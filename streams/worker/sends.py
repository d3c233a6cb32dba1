"""What the worker does with a send the broker refused: log it, as faust logs its own."""
from __future__ import annotations

import logging

log = logging.getLogger("corridor")


def log_send_error(fut) -> None:
    """A producer future's done-callback: log the error if the send failed."""
    if not fut.cancelled() and fut.exception() is not None:
        log.error("sending to an internal topic failed: %r", fut.exception())
