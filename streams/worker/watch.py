"""Notice a broker that came back as a different (empty) cluster, and stop loudly.

The embedded broker keeps everything in memory: after a restart its topics, committed offsets and
changelogs are gone and it answers with a new cluster id. A worker that carried on would serve
stale tables and re-read whatever arrives as if nothing happened. Outages of the same cluster are
fine: aiokafka reconnects by itself and the worker carries on (docs/guarantees in README).
"""
from __future__ import annotations

import asyncio
import logging
import os

from streams.settings import Settings

log = logging.getLogger("corridor.watch")
EXIT_CLUSTER_CHANGED = 3


def cluster_id(settings: Settings, timeout: float = 3.0) -> str | None:
    """The cluster id the brokers report, or None while they cannot be reached."""
    from streams.broker.embedded import query_cluster_id
    from streams.security import kafka_python_options
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    return query_cluster_id(settings.bootstrap_servers, timeout, kafka_python_options(settings))


async def watch_cluster(settings: Settings, interval: float, exit_=os._exit) -> None:
    """Poll the cluster id; if it changes, log one critical line and exit with status 3."""
    loop = asyncio.get_running_loop()
    first = None
    down = False
    while True:
        current = await loop.run_in_executor(None, cluster_id, settings)
        if current is None:
            if not down:
                log.warning("broker unreachable at %s; waiting for it (the consumer reconnects "
                            "by itself)", settings.broker)
            down = True
        elif first is None:
            first = current
        elif current != first:
            log.critical("broker cluster changed from %s to %s: it restarted empty (tables, offsets "
                         "and changelogs are gone); stopping rather than serving stale figures",
                         first, current)
            logging.shutdown()
            exit_(EXIT_CLUSTER_CHANGED)
            return
        else:
            if down:
                log.warning("broker at %s is back (cluster %s)", settings.broker, current)
            down = False
        await asyncio.sleep(interval)
