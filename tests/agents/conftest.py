"""The agents tier: the real `join_orders` and `timelines` agents under Faust's test contexts, no broker.

How the agents are driven (every seam is named here, so a Faust upgrade that breaks one breaks loudly):

* `agent.test_context()` starts each agent on a local channel (faust docs/userguide/testing.rst).
  Its own `put()` cannot be used: it stamps every message with the agent's topic name, and for an
  agent reading several topics that is "<internal>" (AgentTestWrapper.to_message), while corridor's
  agents tell their input topics apart by `event.message.topic`. So each input is a
  `faust.types.Message` built as the Kafka consumer would build it (topic, partition, offset, bytes
  key and value, the app's generation id) and put on the wrapper's channel, as `put()` does.
* A message is processed when the stream has asked for the next one: `put()`'s wait returns when the
  event enters the stream, before the agent body has run (the test wrapper records values with a
  stream processor), so `_settle` also waits until the stream's `current_event` is cleared.
* The app's producer is a `FakeProducer` (`app.producer` has a setter): it records every send and
  changelog write and partitions keys with aiokafka's default partitioner (murmur2), as the real
  producer does. Messages sent to the two internal join topics are carried to the other agent on
  the partition the real producer would have chosen; that is the whole join, done faithfully.
  Records an agent sends on to their key's partition (streams/worker/reroute.py) are carried the same way.
* Tables write their changelog behind (streams.worker.tables.Utf8KeyTable): the real producer sends the
  pending records before each commit. `Worker.commit()` does what that flush does
  (`faust_patches.write_changelogs`), so a test sees changelog records only after it.
* `Pipeline.settle_mark` and `clock_bound` are replaced on the instance: with no consumer the
  inputs count as caught up and quiet, so shipments settle against the wall clock at once.
* `app.assignor.assigned_actives` is replaced on the instance: with no consumer group there is no
  assignment, and the metrics collector exports only the partitions this worker owns.
* The stream's iterator instantiates the Kafka consumer (never started); its consumer thread service
  creates an event loop of its own, which the fixture closes at the end.

Each test runs in its own event loop (`asyncio.run`) with its own app (a unique app id).
"""
from __future__ import annotations

import asyncio
import inspect
import time
import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP, Message
from prometheus_client.parser import text_string_to_metric_families
from faust.types.tuples import RecordMetadata

from streams.worker.app import create_app
from streams.worker.faust_patches import write_changelogs
from streams.domain.policy import SlaPolicy
from streams.settings import Settings

TEST_TIMEOUT = 20.0          # seconds for one test's coroutine
SETTLE_STEPS = 1000          # loop turns an agent may take to finish one message
_app_ids = itertools.count(1)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests of this directory in a fresh event loop each (no pytest-asyncio here)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT))
    return True


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the Kafka producer picks for `key` (murmur2, as the Java client and aiokafka)."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    headers: dict


class FakeProducer:
    """Stands in for faust's producer: records sends and changelog writes; no broker, no buffer."""

    def __init__(self, partitions: int):
        self.partitions = partitions
        self.sent: list[Sent] = []
        self.changelog: list[Sent] = []

    async def maybe_start(self) -> None:
        return None

    def key_partition(self, topic: str, key: bytes) -> TP:
        return TP(topic, partition_of(key, self.partitions))

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        if partition is None:
            partition = partition_of(key, self.partitions)
        log = self.changelog if topic.endswith("-changelog") else self.sent
        log.append(Sent(topic, key, value, partition, dict(headers or {})))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(RecordMetadata(topic, partition, TP(topic, partition), len(log) - 1,
                                      timestamp, 0))
        return fut

    async def flush(self) -> None:
        return None

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers, **kwargs):
        return await (await self.send(topic, key, value, partition, timestamp, headers))

    def send_soon(self, fut) -> None:
        """Faust's own changelog writes (Table.send_changelog -> Topic.send_soon); the
        write-behind tables send theirs with `send` at a commit."""
        m = fut.message
        self.changelog.append(Sent(m.channel.get_topic_name(), m.key, m.value, m.partition,
                                   dict(m.headers or {})))

    def sent_to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


@dataclass
class Worker:
    """One corridor app with both agents running in test contexts, and the join carried between them."""

    app: object
    settings: Settings
    producer: FakeProducer
    wrappers: dict                                      # agent name -> AgentTestWrapper
    route: dict                                         # topic -> agent name
    offsets: dict = field(default_factory=dict)         # TP -> next offset
    relayed: int = 0                                    # internal messages carried so far

    @property
    def pipe(self):
        return self.app.corridor

    def partition(self, key: str) -> int:
        return partition_of(key.encode(), self.settings.partitions)

    def topic_of(self, kind: str) -> str:
        return self.settings.input_topics[kind]

    async def feed(self, kind: str, event: dict) -> None:
        """A contract event on its input topic, keyed by its id as the producers key it."""
        key = event["order_id"] if kind == "orders" else event["shipment_id"]
        await self.feed_raw(self.topic_of(kind), key.encode(), orjson.dumps(event))

    async def feed_all(self, events) -> None:
        for kind, event in events:
            await self.feed(kind, event)

    async def feed_raw(self, topic: str, key: bytes | None, value: bytes | None,
                       partition: int | None = None, headers=None) -> None:
        """Any bytes on any input topic; then carry the join's internal messages until quiet."""
        if partition is None:
            partition = partition_of(key, self.settings.partitions) if key else 0
        await self._deliver(topic, key, value, partition, headers)
        await self._relay()

    async def _deliver(self, topic, key, value, partition, headers) -> None:
        wrapper = self.wrappers[self.route[topic]]
        tp = TP(topic, partition)
        offset = self.offsets.get(tp, 0)
        self.offsets[tp] = offset + 1
        message = Message(topic=topic, partition=partition, offset=offset,
                          timestamp=0.0, timestamp_type=0, headers=headers, key=key, value=value,
                          checksum=None, generation_id=self.app.consumer_generation_id)
        channel = wrapper.stream().channel
        await channel.put(await channel.decode(message))
        async with wrapper.new_value_processed:
            await wrapper.new_value_processed.wait()
        await self._settle(wrapper)

    async def _settle(self, wrapper) -> None:
        stream = wrapper.stream()
        for _ in range(SETTLE_STEPS):
            if wrapper._crash_reason is not None:
                raise wrapper._crash_reason
            if stream.current_event is None:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"agent {wrapper.name} did not finish its message")

    async def _relay(self) -> None:
        """Deliver what the agents sent to the internal join topics, in send order, until none is left."""
        internal = (self.settings.topic_order_links, self.settings.topic_shipment_orders,
                    *self.settings.rerouted_topics.values())
        while True:
            pending = [s for s in self.producer.sent if s.topic in internal]
            if self.relayed >= len(pending):
                return
            s = pending[self.relayed]
            self.relayed += 1
            await self._deliver(s.topic, s.key, s.value, s.partition,
                                list(s.headers.items()) or None)

    async def commit(self) -> list[int]:
        """What the producer does before an offset commit: send the tables' pending changelog
        records, rank by rank; the ranks that had records."""
        return await write_changelogs(self.app, self.producer.send, self.producer.flush)

    def totals(self) -> dict:
        return dict(self.pipe.totals.items())

    def sample(self, name: str, **labels) -> float | None:
        """The sample's value summed over labels not given (the corridor series' `partition`)."""
        text = self.pipe.metrics_text().decode()             # what GET /metrics returns
        values = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                  if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
                  and set(s.labels) - set(labels) <= {"partition"}]
        return sum(values) if values else None


@pytest.fixture
def fake_producer():
    """The FakeProducer class (a fixture: `from conftest import` is ambiguous when pytest runs
    every tier, each with a conftest.py)."""
    return FakeProducer


@pytest.fixture
def worker(tmp_path):
    """`async with worker(**settings) as w:` -> a started Worker (inside the test's event loop)."""

    @asynccontextmanager
    async def start(**overrides):
        settings = Settings(**{"app_id": f"corridor-agents-{next(_app_ids)}", "store": "memory://",
                               "data_dir": str(tmp_path / "data"), **overrides})
        app = create_app(settings, SlaPolicy.load())
        app.finalize()
        app.conf.store = "memory://"
        app.flow_control.resume()
        producer = FakeProducer(settings.partitions)
        app.producer = producer
        owned = {TP(settings.topic_shipments, p) for p in range(settings.partitions)}
        app.assignor.assigned_actives = lambda: set(owned)
        # No consumer: every input is taken as caught up and quiet, so shipments settle against
        # the wall clock (Pipeline.settle_mark's idle rule) and a scenario's figures are final
        # as soon as it is fed. The grace period itself is tested in tests/unit.
        app.corridor.settle_mark = lambda partition: time.time()
        app.corridor.clock_bound = lambda partition: time.time()
        route = {settings.topic_orders: "join_orders", settings.topic_order_links: "join_orders",
                 settings.topic_shipments: "timelines", settings.topic_customs: "timelines",
                 settings.topic_shipment_orders: "timelines"}
        route.update({topic: "join_orders" if kind == "orders" else "timelines"
                      for kind, topic in settings.rerouted_topics.items()})
        join_orders, timelines = app.agents["join_orders"], app.agents["timelines"]
        try:
            async with join_orders.test_context() as jo, timelines.test_context() as tl:
                yield Worker(app, settings, producer, {"join_orders": jo, "timelines": tl}, route)
        finally:
            _close_consumer_thread_loop(app)

    return start


def _close_consumer_thread_loop(app) -> None:
    """The stream creates the (never started) Kafka consumer, whose thread service made a loop."""
    thread = getattr(app._consumer, "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_running():
        loop.close()
