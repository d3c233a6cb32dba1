"""Fixes for faust-streaming bugs that lose messages after a crash, or process them twice after a
rebalance (docs/semantics.md "Crashes").

Applied in every profile: they are Faust bugs, not broker ones. tests/e2e/test_crash.py and
test_retention.py fail if they stop working; tests/unit/test_final_commit.py covers the final
commit, tests/e2e/test_olist_races.py shows it. The upstream functions these replace, wrap or
rely on, and their fingerprints, are in streams.worker.faust_patches.UPSTREAM (patch module
"crash_fixes").
"""
from __future__ import annotations

import asyncio


def _drain_producer_buffer_patch() -> None:
    """Make the producer buffer's flush send everything before the consumer commits.

    Faust queues every table write (changelog record) in `ProducerBuffer` and sends it from a
    background task. Before committing offsets the consumer calls `producer.flush()`, whose
    `buffer.flush()` in faust-streaming 0.15.3 returns as soon as 0.1 s pass without a send: under
    CPU load it returned with changelog records still queued, the offsets of the events that
    caused them were committed, and a SIGKILL then lost those state changes for good (the
    successor resumed after the events). Measured by benchmarks/crash_trials.py: about half of
    the trials on a loaded machine ended with shipments "awaiting order"; none after this patch.
    Applies to every profile: it is a Faust bug, not a broker one.
    """
    from faust.transport.producer import ProducerBuffer
    if getattr(ProducerBuffer, "_corridor_patched", False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self, fut) -> None:
        self._corridor_inflight = getattr(self, "_corridor_inflight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._corridor_inflight -= 1

    async def flush(self) -> None:
        if self.app is not None and self.app.conf.producer_threaded:
            return await self.flush_atmost(None)
        while True:
            try:
                fut = self.pending.get_nowait()
            except asyncio.QueueEmpty:
                if not getattr(self, "_corridor_inflight", 0):
                    return
                await asyncio.sleep(0.001)     # the background task is handing one over
                continue
            await _send_pending(self, fut)

    ProducerBuffer._send_pending = _send_pending
    ProducerBuffer.flush = flush
    ProducerBuffer._corridor_patched = True


def _seek_with_flow_stopped_patch() -> None:
    """No message may reach a stream between a partition's resume and its seek to the committed
    offset.

    faust-streaming 0.15.3's recovery resumes the stream partitions, then awaits the seek to the
    committed offsets, then resumes the streams' flow control. Records fetched during that await
    reached the streams while their flow control was still suspended; the stream skips such a
    message and acks it, and the seek had already happened, so nothing fetched them again: the
    first messages of a partition were lost when a worker started under load
    (benchmarks/crash_trials.py: a missing delivery in about one trial in ten). Stopping the
    consumer's flow for the seek drops what was fetched (the seek fetches it again), and recovery
    resumes the flow only after the streams' flow control. Partitions without a committed offset
    go back to their beginning (the `earliest` reset policy): aiokafka leaves them where they are.
    Applies to every profile: it is a Faust bug, not a broker one.
    """
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    if getattr(Consumer, "_corridor_seek_patched", False):
        return
    perform_seek = Consumer.perform_seek

    async def _perform_seek(self) -> None:
        self.stop_flow()
        await perform_seek(self)

    async def _seek_to_committed(self):
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        streams = self.app.topics.acking_topics      # not changelogs: recovery positions those
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic in streams]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        return committed

    async def seek_to_committed(self):
        return await self.call_thread(self._corridor_seek_to_committed)

    Consumer.perform_seek = _perform_seek
    AIOKafkaConsumerThread._corridor_seek_to_committed = _seek_to_committed
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    Consumer._corridor_seek_patched = True


def _final_commit_patch() -> None:
    """The commit that ends a stream's work (partitions revoked, the worker stopping) commits
    every offset acknowledged until then, even when another commit is running.

    faust-streaming 0.15.3's `Consumer.commit` returns without committing when a commit is
    already running: it waits for that one, which took its offsets before it sent the tables'
    changelogs. `wait_empty`, which every rebalance and every stop runs once the streams are
    still, ends with such a commit (`commit_and_end_transactions`); when the interval's commit
    was in flight (0.3-0.8 s under load on the embedded broker), the records processed during it
    stayed uncommitted while their state went to the changelogs. The partition's next owner
    then read them again over a state that had moved on: shipments forgotten meanwhile (a
    retention after their end) were started again from their old events, counted a second time
    or left awaiting an order that was forgotten too (the Olist replay while a second worker
    joins: 29 deliveries counted twice and 119 shipments awaiting an order in one `make test`;
    in a loop with logs, 32 shipments started again from records a month of event time behind
    the state). Here that commit waits until no commit is running, then commits. Applies to
    every profile: it is a Faust bug, not a broker one.
    """
    from faust.transport.consumer import Consumer
    if getattr(Consumer, "_corridor_final_commit_patched", False):
        return

    async def commit_and_end_transactions(self) -> None:
        while self._commit_fut is not None:
            await self.maybe_wait_for_commit_to_finish()
            await asyncio.sleep(0)       # a cancelled commit clears its future as it unwinds
        await self.commit(start_new_transaction=False)

    Consumer.commit_and_end_transactions = commit_and_end_transactions
    Consumer._corridor_final_commit_patched = True
