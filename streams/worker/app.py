"""create_app(settings) -> faust.App: the only place that wires topics, tables, agents, views, metrics.

Data flow (every topic and changelog has `settings.partitions` partitions, so Faust's assignor
co-partitions all of them: partition p of every topic lives on the same worker):

    orders (key order_id) ─┐                         ┌─> <app>-shipment-orders (key shipment_id)
    <app>-order-links ─────┴─ agent join_orders ─────┘   order events re-keyed to their shipments
        (key order_id)         table orders

    shipments, customs-events, <app>-shipment-orders ── agent timelines ── table timelines
        (key shipment_id)                                  │              table totals  "<p>|<corridor>"
                                                           └─> <app>-order-links      table clock   "p<n>", "w<n>", "t<n>|<topic>"

The per-corridor totals are keyed by source partition, so each partition's totals travel with it
(changelog partition p) and a worker exports only the partitions it owns.
"""
from __future__ import annotations

import asyncio
import logging

import faust

from streams.domain.policy import SlaPolicy
from streams.security import ssl_context
from streams.settings import Settings
from streams.topics import dlq_name
from streams.worker import agents, faust_patches
from streams.worker.faust_patches.stopping import StoppingWorker
from streams.worker.monitor import OffsetsMonitor
from streams.worker.pipeline import Pipeline, Tables
from streams.worker.reroute import Rerouter
from streams.worker.tables import Utf8KeyTable, register_codecs
from streams.worker.views import register as register_views
from streams.worker.watch import watch_cluster

log = logging.getLogger("corridor")

CLOCK_PERSIST_SECONDS = 1.0      # how often a worker shares its partitions' clocks
RISK_SECONDS = 1.0               # how often risk counts are shared and open shipments scored
SETTLE_IDLE_SECONDS = 1.0        # how often idle partitions are settled against the wall clock
#: Faust's count-based commit, set out of reach (faust_settings).
COMMIT_EVERY_MESSAGES = 10**9
#: Producer record batch size: half of faust's default producer_max_request_size (1,000,000).
PRODUCER_BATCH_BYTES = 512 * 1024


def faust_settings(settings: Settings) -> dict:
    """Faust settings for the chosen profile. Embedded-broker workarounds stay in that profile."""
    worker = type("StoppingWorker", (StoppingWorker,), {"stop_timeout": settings.stop_timeout_seconds})
    conf = dict(
        Worker=worker,
        Table=Utf8KeyTable,
        Monitor=OffsetsMonitor,
        broker=settings.broker,
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        # Topics Faust creates itself; corridor creates the changelogs first (streams/broker/provision.py).
        topic_replication_factor=max(settings.replication_factor, 1),
        table_standby_replicas=settings.standby_replicas,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        # The web port serves only what corridor documents: metrics, health, the views.
        web_tables_enabled=False, web_stats_enabled=False, web_graph_enabled=False,
        web_router_enabled=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="utf8",
        value_serializer="raw",
        # The Cython stream iterator takes an event already in its queue without awaiting the
        # channel (faust's opt-in repair of that fast path): ~3 % less CPU per event.
        cython_optimizations=True,
        # Commits come from the commit interval only. Faust also commits every 10,000 messages
        # from inside its fetcher loop, which then hands no message to the streams until the
        # commit's changelog records are acknowledged (docs/performance.md "Latency").
        broker_commit_every=COMMIT_EVERY_MESSAGES,
        # A commit sends thousands of changelog records (~2 KiB each); aiokafka holds one open
        # batch per partition and a send into a full one waits until it is sent, so with faust's
        # 16 KiB batches a commit took 0.5-1.5 s of round trips at 5,000 events/s.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # faust's check only raises ConsistencyError (the worker exits) when a store is past its
        # changelog's end; corridor lowers such offsets itself and goes on (faust_patches
        # `_recovery_ends_patch`, docs/semantics.md "Crashes").
        recovery_consistency_check=False,
    )
    credentials = faust_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    if settings.profile == "embedded":
        # Tansu (docs/broker.md): the group session fixes the join delay (session/2) and the
        # eviction of dead members. ListOffsets(latest) answers the last batch's base offset + 1,
        # which would lose a changelog's tail on recovery: the producer ends each flush with
        # markers (faust_patches, `corridor_end_markers`) rather than sending batches of 1.
        conf.update(broker_session_timeout=2.0, broker_heartbeat_interval=0.5,
                    broker_commit_interval=0.3)
    return conf


def create_app(settings: Settings, policy: SlaPolicy | None = None) -> faust.App:
    settings.validate()
    policy = policy or SlaPolicy.load(settings.sla_policy or None, settings.import_regimes or None)
    faust_patches.apply(embedded=settings.profile == "embedded", allow_untested=settings.allow_untested_faust)
    register_codecs()
    app = faust.App(settings.app_id, **faust_settings(settings))
    app.corridor_end_markers = settings.profile == "embedded"
    # RocksDB store: the agents hold still while a commit writes the changelogs (docs/semantics.md
    # "Crashes"), so that the store never runs ahead of a changelog tail that recovery replays.
    gate = app.corridor_flush_gate = (asyncio.Event() if settings.store.startswith("rocksdb")
                                      else None)
    if gate is not None:
        gate.set()

    def topic(name: str):
        return app.topic(name, key_type=str, value_type=bytes, key_serializer="utf8",
                         value_serializer="raw", partitions=settings.partitions)

    def table(name: str):
        return app.Table(name, default=None, key_type=str, partitions=settings.partitions,
                         schema=faust.Schema(key_type=str, key_serializer="utf8",
                                             value_serializer="orjson"))

    # Declared so that Faust knows their partition counts (the agents read them with raw keys).
    _ = [topic(name) for name in settings.input_topics.values()]
    totals = table("totals")
    totals.flush_rank = 1      # after the states whose counts they hold (docs/semantics.md)
    # The stream clock: one small value per partition that every worker reads (docs/semantics.md).
    # One partition and recovery_buffer_size=1, as faust's GlobalTable docs advise for several
    # workers; written by a timer (use_partitioner: no stream event needed).
    # Always a memory store (recovered from its changelog at start like any table): it is written by
    # a timer, outside any stream event, and faust's RocksDB store asserts an event in _set, so with
    # store=rocksdb:// the worker crashed a second after start. The URL needs a host: faust ignores
    # a falsy store URL, and yarl's URL("memory://") is falsy.
    clock = app.GlobalTable("clock", default=None, partitions=1, recovery_buffer_size=1,
                            use_partitioner=True, key_type=str, value_type=float,
                            store="memory://clock")
    # The fleet's lateness model: each owner shares its partitions' risk counts (docs/risk.md
    # "Online"); a memory store for the same reason as the clock.
    risk_counts = app.GlobalTable("risk", default=None, partitions=1, recovery_buffer_size=1,
                                  use_partitioner=True, key_type=str,
                                  schema=faust.Schema(key_type=str, key_serializer="utf8",
                                                      value_serializer="orjson"),
                                  store="memory://risk")
    tables = Tables(timelines=table("timelines"), orders=table("orders"), totals=totals, clock=clock,
                    risk=risk_counts)
    dlq = {name: topic(dlq_name(name)) for name in settings.input_topics.values()}
    pipe = app.corridor = Pipeline(settings, policy, app, tables, dlq)
    reroute = Rerouter(settings, lambda: app.producer, pipe.counters)
    rerouted = settings.rerouted_topics

    async def on_order_side(message) -> None:
        if gate is not None and not gate.is_set():
            await gate.wait()      # the RocksDB store: a commit is writing the changelogs
        try:
            await agents.order_record(pipe, reroute, message)
        except Exception as exc:
            await agents.unprocessable(pipe, message, exc)

    async def on_shipment_side(message) -> None:
        if gate is not None and not gate.is_set():
            await gate.wait()
        try:
            await agents.timeline_record(pipe, reroute, message)
        except Exception as exc:
            await agents.unprocessable(pipe, message, exc)

    order_topics = (settings.topic_orders, settings.topic_order_links, rerouted["orders"])
    shipment_topics = (settings.topic_shipments, settings.topic_customs, rerouted["shipments"],
                       rerouted["customs"], settings.topic_shipment_orders)

    # Keys stay raw bytes here: the decoder checks them (a key that is not UTF-8 is a
    # key_mismatch); a Faust key codec that raises would crash the agent and lose the message.
    # The agents subscribe the topics (faust assigns, fetches and seeks them); with the batch
    # path on, the fetcher applies their records itself, a topic partition's fetch in one call
    # (faust_patches.delivery.deliver_batch), and the agents' streams stay empty.
    @app.agent(app.topic(*order_topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw"), name="join_orders")
    async def join_orders(stream):
        async for event in stream.events():
            await on_order_side(event.message)

    @app.agent(app.topic(*shipment_topics, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw"), name="timelines")
    async def timelines(stream):
        async for event in stream.events():
            await on_shipment_side(event.message)

    if settings.batch_delivery:
        app.corridor_batches = {**{t: on_order_side for t in order_topics},
                                **{t: on_shipment_side for t in shipment_topics}}

    if settings.broker_watch_seconds > 0:
        @app.task
        async def broker_watch():
            await watch_cluster(settings, settings.broker_watch_seconds)

    @app.timer(CLOCK_PERSIST_SECONDS)
    async def share_clock():
        if pipe.persist_clock() and app.corridor_end_markers:
            await app.producer.mark_changelog_ends()     # an idle worker commits nothing after
        pipe.warm_open_index()

    @app.timer(RISK_SECONDS)
    async def score_risk():
        pipe.publish_risk()
        await pipe.score_risk()

    @app.timer(SETTLE_IDLE_SECONDS)
    async def settle_idle():
        if not pipe.assigned or not pipe.settled():
            return
        if gate is not None and not gate.is_set():
            await gate.wait()
        agents.settle_idle(pipe)

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs):
        pipe.assigned = True

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs):
        pipe.on_partitions_revoked(revoked)
        pipe.counters.rebalances.inc()

    register_views(app, pipe)
    return app


def faust_credentials(settings: Settings):
    """broker_credentials for faust.App, or None for PLAINTEXT."""
    ctx = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                     mechanism=settings.sasl_mechanism, ssl_context=ctx)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None
