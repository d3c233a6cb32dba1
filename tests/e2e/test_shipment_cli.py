"""`corridor shipment ID` against a real worker on the real broker: the exact terminal view, --json,
a shipment the worker does not know (exit 1) and a worker that is not there (exit 2)."""
import json
import os
from datetime import datetime, timedelta, timezone
import subprocess
import sys

import pytest

from builders import journey, ship
from harness import REPO, Worker, free_port, poll, produce, unique_app_id, wait_final

pytestmark = pytest.mark.e2e

NOW = "2025-03-06T20:00:00Z"          # h140: the latest event produced


@pytest.fixture(scope="module")
def worker(broker, logdir):
    w = Worker(broker.url, unique_app_id(), logdir).start()
    try:
        produce(broker.bootstrap, journey("S1", "O1", promised_h=200, hold=True)
                + journey("S4", "O4", promised_h=150, released=None, delivered=None)
                + [("shipments", ship("S6", "picked_up", 140))])

        def settled():
            views = [w.get(f"/shipments/{sid}") for sid in ("S1", "S4")]
            return all(status == 200 and body["now"] == NOW for status, body in views) \
                and views[0][1]["status"] == "delivered" and views[1][1]["stage"] == "customs"
        poll(settled, 60, 0.2, "the worker shows S1 delivered and S4 in customs at h140")
        wait_final([w])                 # S1's figures final: its timeline compacted
        # and its delivery in the fleet's lateness model (shared each second through a table)
        poll(lambda: (w.get("/shipments/S4")[1].get("prediction") or {}).get("delivery_p50"), 30,
             0.2, "S1's delivery in the lateness model")
        yield w
    finally:
        w.stop()


def corridor_shipment(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != "CORRIDOR_WORKER_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "streams", "shipment", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_a_delivered_shipment(worker):
    result = corridor_shipment("S1", "--url", worker.base)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "Shipment S1  (times in UTC)",
        "  corridor       CN-AU",
        "  service level  standard",
        "  status         delivered",
        "  SLA            on time (delivered 2d 22h before the promise)",
        "  promised       2025-03-09 08:00",
        "  now            2025-03-06 20:00 (the stream's event time)",
        "  orders         O1",
        "",
        "  stage       started           duration  target  beyond target",
        "  fulfilment  2025-03-01 00:00  10h       2d      -",
        "  origin      2025-03-01 10:00  20h       2d      -",
        "  linehaul    2025-03-02 06:00  2d 02h    4d      -",
        "  customs     2025-03-04 08:00  20h       2d      -",
        "  last_mile   2025-03-05 04:00  1d 06h    3d      -",
        "",
        "  time              source     event                info",
        "  2025-03-01 00:00  orders     order_placed         O1",
        "  2025-03-01 01:00  shipments  label_created",
        "  2025-03-01 10:00  shipments  picked_up",
        "  2025-03-02 06:00  shipments  departed_origin",
        "  2025-03-04 08:00  shipments  arrived_destination",
        "  2025-03-04 10:00  customs    held_for_inspection  import AU D-S1-import",
        "  2025-03-05 04:00  customs    released             import AU D-S1-import",
        "  2025-03-06 10:00  shipments  delivered",
        "",
        "Now: delivered at 2025-03-06 10:00, 5d 10h after the order was placed.",
    ]


def test_an_open_shipment_with_the_url_from_the_environment(worker):
    result = corridor_shipment("S4", env={"CORRIDOR_WORKER_URL": worker.base + "/"})
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[3:5] == ["  status         open", "  SLA            on track (10h left)"]
    assert lines[9:14] == [
        "  stage       started           duration       target  beyond target",
        "  fulfilment  2025-03-01 00:00  10h            2d      -",
        "  origin      2025-03-01 10:00  20h            2d      -",
        "  linehaul    2025-03-02 06:00  2d 02h         4d      -",
        "> customs     2025-03-04 08:00  2d 12h so far  2d      12h",
    ]
    assert lines[-2] == "Now: in customs since 2025-03-04 08:00, 2d 12h so far, 12h beyond its 2d target."
    # The fleet's model knows one delivery, S1: 20 h in customs (dwell bin 18, from 2^4.25 h),
    # 50 h from arrival to delivery (bin 23: 2^5.5..2^5.75 h). S4 has spent 60 h there, longer
    # than any sample: judged by S1 delayed by 60 h - 2^4.25 h = 40.97 h; its slack, 70 h, less
    # that is 29.03 h, below S1's 50 h: late at every level, each shrunk with 10 pseudo-samples
    # towards the next: stage 1/11, destination (1 + 10/11)/11, corridor (1 + 210/121)/11 = 24.9 %.
    # The range: S1's bin at 7.5 %, 50 %, 92.5 % (log-uniform), + the delay, from h80.
    delay = 60 - 2 ** 4.25
    at = [80 + 2 ** (5.5 + 0.25 * q) + delay for q in (0.075, 0.5, 0.925)]
    p10, p50, p90 = (datetime(2025, 3, 1, tzinfo=timezone.utc) + timedelta(hours=h) for h in at)
    fmt = "%Y-%m-%d %H:%M"
    assert round(331 / 1331, 3) == 0.249
    assert lines[-1] == (f"Predicted: P(late) 25%, judged by its time in customs; delivery likely "
                         f"{p10:{fmt}} to {p90:{fmt}} (median {p50:{fmt}}; compared with its stage).")


def test_json_is_the_workers_document(worker):
    result = corridor_shipment("S1", "--url", worker.base, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == worker.get("/shipments/S1")[1]


def test_an_unknown_shipment_is_one_line_and_exit_1(worker):
    result = corridor_shipment("NOPE", "--url", worker.base)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"corridor shipment: shipment NOPE not found at {worker.base}\n"


def test_an_unreachable_worker_is_one_line_and_exit_2():
    url = f"http://127.0.0.1:{free_port()}"
    result = corridor_shipment("S1", "--url", url)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"corridor shipment: cannot reach a worker at {url}: ")
