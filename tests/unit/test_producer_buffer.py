"""faust_patches: ProducerBuffer.size reads `producer_threaded` once per buffer, not per message."""
import asyncio

from faust.transport.producer import ProducerBuffer

from streams.worker import faust_patches


class Conf:
    def __init__(self, threaded: bool):
        self._threaded, self.reads = threaded, 0

    @property
    def producer_threaded(self) -> bool:
        self.reads += 1
        return self._threaded


class App:
    def __init__(self, threaded: bool):
        self.conf = Conf(threaded)


def test_size_counts_the_pending_queue_and_reads_the_setting_once():
    faust_patches.apply(embedded=False)

    async def main():
        buf = ProducerBuffer()
        buf.app = App(threaded=False)
        sizes = [buf.size]
        for item in range(3):
            buf.pending.put_nowait(item)
            sizes.append(buf.size)
        await buf.wait_until_ebb()              # 3 <= max_messages: returns at once
        return sizes, buf.app.conf.reads

    sizes, reads = asyncio.run(main())
    assert sizes == [0, 1, 2, 3]
    assert reads == 1


def test_a_threaded_producer_buffer_is_measured_as_faust_does():
    faust_patches.apply(embedded=False)

    async def main():
        buf = ProducerBuffer()
        buf.app = App(threaded=True)
        buf.pending.put_nowait("not this queue")
        return buf.size                          # faust: no thread queue yet -> 0

    assert asyncio.run(main()) == 0
