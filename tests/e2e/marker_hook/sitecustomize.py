"""Test-only start-up hook (tests/e2e/test_changelog_tail.py), on PYTHONPATH of a worker started
with CORRIDOR_TEST_MARKER_TRIGGER=<file>. Once <file> exists, at the end marker of a timelines
changelog partition (streams.worker.faust_patches, sent after the flush's records are acknowledged):

- CORRIDOR_TEST_MARKER_HOOK=kill: the worker SIGKILLs itself, if the flush sent at least
  CORRIDOR_TEST_KILL_MIN_RECORDS records to that partition since its last marker;
- CORRIDOR_TEST_MARKER_HOOK=drop: the marker is not sent (as if it had been lost in a broker
  freeze) and the worker goes on.

Python imports `sitecustomize` at start-up; nothing in streams/ knows about this."""
import os

_TRIGGER = os.environ.get("CORRIDOR_TEST_MARKER_TRIGGER")

if _TRIGGER:
    import asyncio
    import signal
    import sys

    from aiokafka import AIOKafkaProducer

    _MARKER = b'"\\u0000corridor-end-of-flush"'          # streams.worker.faust_patches.END_MARKER_KEY
    _MODE = os.environ["CORRIDOR_TEST_MARKER_HOOK"]
    _MIN = int(os.environ.get("CORRIDOR_TEST_KILL_MIN_RECORDS", "2"))
    _send = AIOKafkaProducer.send
    _since_marker: dict = {}
    _dropped: set = set()

    def _note(line: str) -> None:
        sys.stderr.write(f"marker hook: {line}\n")
        sys.stderr.flush()

    async def send(self, topic, value=None, key=None, partition=None, *args, **kwargs):
        if key == _MARKER:
            n = _since_marker.pop((topic, partition), 0)
            if topic.endswith("-timelines-changelog") and os.path.exists(_TRIGGER):
                if _MODE == "kill" and n >= _MIN:
                    _note(f"SIGKILL before the marker of {topic}[{partition}], {n} records "
                          "after the last one")
                    os.kill(os.getpid(), signal.SIGKILL)
                if _MODE == "drop":
                    if (topic, partition) not in _dropped:
                        _note(f"dropping the markers of {topic}[{partition}]")
                        _dropped.add((topic, partition))
                    done = asyncio.get_running_loop().create_future()
                    done.set_result(None)
                    return done
        elif topic.endswith("-changelog"):
            _since_marker[topic, partition] = _since_marker.get((topic, partition), 0) + 1
        return await _send(self, topic, value, key, partition, *args, **kwargs)

    _send_batch = AIOKafkaProducer.send_batch

    async def send_batch(self, batch, topic, *, partition):
        if topic.endswith("-changelog"):        # the worker writes changelogs in whole batches
            _since_marker[topic, partition] = (_since_marker.get((topic, partition), 0)
                                               + batch.record_count())
        return await _send_batch(self, batch, topic, partition=partition)

    AIOKafkaProducer.send = send
    AIOKafkaProducer.send_batch = send_batch
