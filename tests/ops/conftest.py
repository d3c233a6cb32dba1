"""ops fixtures: shared by the ops tests (rules, deploy files, live Prometheus + Alertmanager)."""
import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Debian's promtool (`make ops-tools` installs it); a missing tool is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make ops-tools` (bash .ci/ensure-ops-tools.sh)")
    return path
