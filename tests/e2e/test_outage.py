"""Broker outages. A short outage of the same broker: the worker reconnects by itself and goes on.
The embedded broker restarted (memory storage: empty, new cluster id): the worker stops loudly
(exit status 3, one critical log line) instead of serving stale figures.
"""
import signal
import time

import pytest

from builders import journey
from harness import Worker, poll, produce, sample, unique_app_id
from streams.broker.embedded import EmbeddedBroker

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_broker():
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


def consumed(w, topic="shipments"):
    return sample(w.metrics(), "corridor_events_consumed_total", topic=topic) or 0


def test_a_paused_broker_is_waited_for_and_the_worker_carries_on(own_broker, logdir):
    w = Worker(own_broker.url, unique_app_id("corridor-pause"), logdir,
               env={"CORRIDOR_BROKER_WATCH_SECONDS": "0.5"}).start()
    try:
        produce(own_broker.bootstrap, [e for e in journey("S1", "O1") if e[0] == "shipments"])
        poll(lambda: consumed(w) == 5, 30)
        own_broker._proc.send_signal(signal.SIGSTOP)        # unreachable, state kept
        time.sleep(5)
        own_broker._proc.send_signal(signal.SIGCONT)
        produce(own_broker.bootstrap, [e for e in journey("S2", "O2") if e[0] == "shipments"])
        poll(lambda: consumed(w) == 10, 60, what="worker carried on after the outage")
        assert w.proc.poll() is None
        log = w.log_path.read_text()
        assert "broker unreachable" in log and "is back" in log
    finally:
        w.stop()


def test_an_embedded_broker_that_restarted_empty_stops_the_worker_loudly(own_broker, logdir):
    w = Worker(own_broker.url, unique_app_id("corridor-restart"), logdir,
               env={"CORRIDOR_BROKER_WATCH_SECONDS": "0.5"}).start()
    produce(own_broker.bootstrap, [e for e in journey("S1", "O1") if e[0] == "shipments"])
    poll(lambda: consumed(w) == 5, 30)
    own_broker.restart()                                    # same port, empty, new cluster id
    poll(lambda: w.proc.poll() is not None, 60, what="worker exited")
    assert w.proc.returncode == 3
    assert "broker cluster changed from" in w.log_path.read_text()


def test_sigterm_stops_a_worker_whose_broker_is_gone(own_broker, logdir):
    """Issue 15: with its broker gone, a worker given SIGTERM was still running 60 s later (faust's
    shutdown waits on the broker), so every stop during an outage waited for SIGKILL."""
    w = Worker(own_broker.url, unique_app_id("corridor-stop"), logdir,
               env={"CORRIDOR_STOP_TIMEOUT_SECONDS": "3"}).start()
    try:
        produce(own_broker.bootstrap, [e for e in journey("S1", "O1") if e[0] == "shipments"])
        poll(lambda: consumed(w) == 5, 30)
        own_broker._proc.send_signal(signal.SIGSTOP)        # gone, as far as the worker can tell
        w.proc.send_signal(signal.SIGTERM)
        poll(lambda: w.proc.poll() is not None, 60, what="the worker to exit after SIGTERM")
        assert w.proc.returncode == 143
        assert "did not stop within 3 s of SIGTERM" in w.log_path.read_text()
    finally:
        own_broker._proc.send_signal(signal.SIGCONT)
        w.stop()
