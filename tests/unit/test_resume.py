"""faust_patches.resume: a coroutine run by hand up to its first suspension is finished by a task
exactly as if a task had run it from the start (the fetcher's per-message fast path)."""
import asyncio

import pytest

from streams.worker.faust_patches import resume


def start(coro):
    """Run `coro` up to its first suspension: (True, result) if it finished, else (False, yielded)."""
    try:
        return False, coro.send(None)
    except StopIteration as stop:
        return True, stop.value


async def _steps(log: list, fut: asyncio.Future, bare: bool = False):
    log.append("before")
    if bare:
        await asyncio.sleep(0)                  # yields None
    log.append(("got", await fut))
    return "done"


def test_a_coroutine_that_does_not_suspend_finishes_in_the_first_step():
    async def quick():
        return 42
    assert start(quick()) == (True, 42)


def test_a_suspended_coroutine_resumes_with_the_result_it_waited_for():
    async def main():
        log, fut = [], asyncio.get_running_loop().create_future()
        coro = _steps(log, fut)
        finished, yielded = start(coro)
        assert not finished and yielded is fut and log == ["before"]
        task = asyncio.ensure_future(resume(coro, yielded))
        await asyncio.sleep(0)
        assert not task.done()
        fut.set_result(7)
        assert await task == "done"
        return log
    assert asyncio.run(main()) == ["before", ("got", 7)]


def test_a_bare_yield_and_an_exception_reach_the_coroutine():
    async def main():
        log, fut = [], asyncio.get_running_loop().create_future()
        coro = _steps(log, fut, bare=True)
        finished, yielded = start(coro)
        assert not finished and yielded is None
        task = asyncio.ensure_future(resume(coro, yielded))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        fut.set_exception(ValueError("bad"))
        with pytest.raises(ValueError, match="bad"):
            await task
        return log
    assert asyncio.run(main()) == ["before"]


def test_cancelling_the_task_cancels_what_the_coroutine_waits_for():
    async def main():
        seen, fut = [], asyncio.get_running_loop().create_future()

        async def waits():
            try:
                await fut
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise
        coro = waits()
        _finished, yielded = start(coro)
        task = asyncio.ensure_future(resume(coro, yielded))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, fut.cancelled()
    assert asyncio.run(main()) == (["cancelled inside"], True)
