"""The dead-letter record: a rejected input record, unchanged, with headers that say why and
where it came from. The worker (streams.worker.pipeline) and the feed bridge
(streams.feeds.bridge) both write it; docs/feeds.md and docs/semantics.md list the headers.

Headers added to the record's own:

- ``corridor.reason``: the reason code (streams.contract.codec.REASONS, ``expired``, a feed's);
- ``corridor.detail``: what is wrong, at most MAX_DETAIL_BYTES of UTF-8;
- ``corridor.source.topic`` / ``.partition`` / ``.offset``: where the record was read;
- ``corridor.rejected_at``: when, ISO-8601 UTC with milliseconds and ``Z``;
- and whatever the writer adds (the bridge: ``corridor.where``, ``corridor.format``).
"""
from __future__ import annotations

from datetime import datetime, timezone

#: The longest ``corridor.detail`` header, in bytes.
MAX_DETAIL_BYTES = 1000


def headers(own, reason: str, detail: str, topic: str, partition: int, offset: int,
            extra: list[tuple[str, bytes]] = (), now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The dead letter's headers: the record's `own` (a list of pairs or None), then corridor's."""
    at = now or datetime.now(timezone.utc)
    return list(own or ()) + [
        ("corridor.reason", reason.encode()),
        ("corridor.detail", detail.encode()[:MAX_DETAIL_BYTES]),
        *extra,
        ("corridor.source.topic", topic.encode()),
        ("corridor.source.partition", str(partition).encode()),
        ("corridor.source.offset", str(offset).encode()),
        ("corridor.rejected_at", iso_ms(at).encode()),
    ]


def iso_ms(at: datetime) -> str:
    """`at` as ISO-8601 UTC with milliseconds and a ``Z``."""
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
