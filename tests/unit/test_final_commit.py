"""faust_patches.crash_fixes._final_commit_patch: the commit that ends a stream's work (a rebalance,
a stop) commits everything acknowledged until then even when the interval's commit is running.

faust's own `commit` code runs here (`Consumer.commit`, `maybe_wait_for_commit_to_finish`); only
`force_commit`, which would reach the broker, is a stand-in that commits what is acknowledged when
it starts and then waits, as the real one waits for the changelogs' acknowledgement."""
import asyncio

from faust.transport.consumer import Consumer

from streams.worker import faust_patches


class _App:
    client_only = False


class StandIn:
    """What Consumer.commit and commit_and_end_transactions use of a consumer."""

    commit = Consumer.commit
    maybe_wait_for_commit_to_finish = Consumer.maybe_wait_for_commit_to_finish
    _commit_fut = None

    def __init__(self, loop, final):
        self.app, self.loop = _App(), loop
        self.commit_and_end_transactions = final.__get__(self)
        self.acked = 0                        # offsets below this are acknowledged
        self.committed = 0
        self.sending = asyncio.Event()        # the first commit's changelogs are acknowledged

    async def force_commit(self, topics=None, start_new_transaction=True) -> bool:
        offset = self.acked                   # faust takes the offsets first, then flushes
        if offset == self.committed:
            return False
        await self.sending.wait()
        self.committed = offset
        return True


async def _rebalance_during_a_commit(final) -> int:
    consumer = StandIn(asyncio.get_running_loop(), final)
    consumer.acked = 10
    interval = asyncio.ensure_future(consumer.commit())    # the timer's commit takes 0..9
    await asyncio.sleep(0)
    consumer.acked = 20                                    # processed while it sends
    ending = asyncio.ensure_future(consumer.commit_and_end_transactions())
    await asyncio.sleep(0)
    consumer.sending.set()
    await asyncio.gather(interval, ending)
    return consumer.committed


def test_the_final_commit_follows_a_running_commit_and_commits_the_rest():
    faust_patches.apply(embedded=False)
    assert asyncio.run(_rebalance_during_a_commit(Consumer.commit_and_end_transactions)) == 20


def test_without_the_patch_the_records_acknowledged_meanwhile_stay_uncommitted():
    async def faust_final(self) -> None:      # faust-streaming 0.15.3's, as the patch replaces it
        await self.commit(start_new_transaction=False)
    assert asyncio.run(_rebalance_during_a_commit(faust_final)) == 10


def test_with_no_commit_running_the_final_commit_commits_at_once():
    async def main():
        faust_patches.apply(embedded=False)
        consumer = StandIn(asyncio.get_running_loop(), Consumer.commit_and_end_transactions)
        consumer.acked = 7
        consumer.sending.set()
        await consumer.commit_and_end_transactions()
        return consumer.committed
    assert asyncio.run(main()) == 7
