"""faust_patches: faust's Cython stream iterator yields to the event loop once per
STREAM_YIELD_EVERY events instead of once per event (docs/performance.md)."""
import asyncio

import faust.streams
from faust._cython import streams as cstreams

from streams.worker import faust_patches
from streams.worker.faust_patches import STREAM_YIELD_EVERY, yielding_every


def yields(coro) -> bool:
    """Did the coroutine suspend (yield to the event loop) before finishing?"""
    try:
        coro.send(None)
    except StopIteration:
        return False
    coro.close()
    return True


def test_zero_delay_sleeps_yield_once_every_n_calls():
    sleep = yielding_every(4)
    assert [yields(sleep(0)) for _ in range(12)] == [False, False, False, True] * 3


def test_a_sleep_that_returns_at_once_returns_its_result():
    sleep = yielding_every(4)
    try:
        sleep(0, "r").send(None)
    except StopIteration as stop:
        assert stop.value == "r"


def test_a_real_delay_always_sleeps():
    async def main():
        sleep = yielding_every(1000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sleep(0.05)
        return loop.time() - t0
    assert asyncio.run(main()) >= 0.05


def test_a_faust_stream_lets_other_tasks_run_once_per_n_events():
    faust_patches.apply(embedded=False)
    assert faust.streams._CStreamIterator is cstreams.StreamIterator   # the one Stream uses

    async def main():
        app = faust.App("yield-test", store="memory://")
        turns, done = 0, False

        async def other_task():
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(other_task())
        await asyncio.sleep(0)              # it has run once
        seen = [v async for v in app.stream(list(range(10 * STREAM_YIELD_EVERY)))]
        done = True
        await task
        return seen, turns

    seen, turns = asyncio.run(main())
    assert seen == list(range(10 * STREAM_YIELD_EVERY))
    assert turns == 1 + 10                  # one turn per STREAM_YIELD_EVERY events (was 1 each)
