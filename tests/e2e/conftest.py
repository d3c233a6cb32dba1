"""e2e fixtures: one embedded broker per test module, a log directory, worker factory."""
import pytest

from streams.broker.embedded import EmbeddedBroker


@pytest.fixture(scope="module")
def broker():
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")
