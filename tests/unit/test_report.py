"""`corridor report` on a small hand-made log whose figures are computed by hand below.

Hours after T0 (tests/builders.py); the SLA policy is the shipped one (CN-AU standard 288 h,
express 120 h, US-MX express 72 h and linehaul target 48 h):

  S1/O1 CN-AU standard, promised h200, delivered h130   on time, transit 130 h, last mile 30 h
  S2/O2 CN-AU standard, promised h140, delivered h150   late,    transit 150 h, last mile 50 h
  S3/O3 CN-AU standard, no promise,    delivered h170   on time (288 h), transit 170 h, last mile 70 h
  S4/O4 DE-US express,  no promise,    delivered h125   late (120 h)
  S5/O5 US-MX express,  in linehaul since h30           open at now = h170: overdue (72 h), 92 h over
                                                        the 48 h linehaul target: the bottleneck
  S6/O6 CN-US economy,  returned h130                   an exception, no delivery
Every other stage lasts as in builders.journey: fulfilment 10, origin 20, linehaul 50, customs 20 h.
Exact percentiles interpolate linearly: transit CN-AU [130, 150, 170] -> p50 150, p90 166, p95 168.
"""
import argparse
import csv
import io
import json
from html.parser import HTMLParser

import orjson
import pandas as pd
import pytest

from builders import HOUR, T0_EPOCH, journey, ship
from streams.tools import report
from streams.tools.report import ReportError

H = HOUR


def events():
    return (journey("S1", "O1", promised_h=200)
            + journey("S2", "O2", promised_h=140, delivered=150.0)
            + journey("S3", "O3", delivered=170.0)
            + journey("S4", "O4", seller="DE", buyer="US", sl="express", delivered=125.0)
            + journey("S5", "O5", seller="US", buyer="MX", sl="express", arrived=None, released=None,
                      delivered=None)
            + journey("S6", "O6", seller="CN", buyer="US", sl="economy", end="returned"))


@pytest.fixture
def log(tmp_path):
    """The events as JSON Lines: kinds by field, by topic name and by event type, plus 2 bad lines."""
    path = tmp_path / "events.jsonl"
    lines = []
    for i, (kind, ev) in enumerate(events()):
        if i % 3 == 0:
            lines.append(orjson.dumps({"kind": kind, **ev}))
        elif i % 3 == 1:
            lines.append(orjson.dumps({"topic": {"customs": "customs-events"}.get(kind, kind), **ev}))
        else:
            lines.append(orjson.dumps(ev))           # no kind: follows from event_type
    bad = ship("S7", "picked_up", 5.0)
    bad["occurred_at"] = "2025-03-01T05:00:00"        # no offset: the worker's Decoder refuses it
    lines += [b"{not json", orjson.dumps({"kind": "shipments", **bad})]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run(*argv, capsys=None):
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main(parser.parse_args([str(a) for a in argv])) == 0
    if capsys is not None:
        return capsys.readouterr()
    return None


def test_figures_equal_the_hand_computed_values(log, capsys):
    out = run(log, "--format", "json", capsys=capsys)
    doc = json.loads(out.out)
    assert doc["now"] == "2025-03-08T02:00:00Z" and doc["now_epoch"] == T0_EPOCH + 170 * H
    assert doc["input"]["rejected"] == {"bad_timestamp": 1, "not_json": 1}
    c = doc["corridors"]
    assert sorted(c) == ["CN-AU", "CN-US", "DE-US", "US-MX"]
    au = c["CN-AU"]
    assert (au["delivered"], au["on_time"], au["late"]) == (3, 2, 1)
    assert au["on_time_rate"] == pytest.approx(2 / 3)
    assert au["transit_seconds"] == {"count": 3, "sum": 450 * H, "p50": 150 * H, "p90": 166 * H,
                                     "p95": 168 * H, "mean": 150 * H}
    assert au["stages"]["last_mile"] == {"count": 3, "sum": 150 * H, "p50": 50 * H, "p90": 66 * H,
                                         "p95": 68 * H, "mean": 50 * H}
    assert {s: v["p50"] for s, v in au["stages"].items()} == {
        "fulfilment": 10 * H, "origin": 20 * H, "linehaul": 50 * H, "customs": 20 * H, "last_mile": 50 * H}
    assert (au["open"], au["overdue"], au["bottleneck"]) == (0, 0, None)
    de = c["DE-US"]
    assert (de["delivered"], de["on_time_rate"], de["transit_seconds"]["p95"]) == (1, 0.0, 125 * H)
    assert de["delivered_by_service_level"] == {"express": {"on_time": 0, "late": 1}}
    mx = c["US-MX"]
    assert (mx["delivered"], mx["on_time_rate"], mx["open"], mx["overdue"], mx["bottleneck"]) == \
        (0, None, 1, 1, "linehaul")
    assert mx["in_stage"] == {"linehaul": 1} and mx["excess_seconds"] == {"linehaul": (170 - 30 - 48) * H}
    assert c["CN-US"]["exceptions"] == {"returned": 1} and c["CN-US"]["delivered"] == 0
    assert "2 rejected (bad_timestamp 1, not_json 1)" in out.err


def test_json_lists_the_series_a_worker_exports(log, capsys):
    doc = json.loads(run(log, "--format", "json", capsys=capsys).out)
    samples = {(m["name"], frozenset(m["labels"].items())): m["value"] for m in doc["metrics"]}
    assert samples[("corridor_shipments_delivered_total", frozenset(
        {"corridor": "CN-AU", "service_level": "standard", "on_time": "true"}.items()))] == 2
    assert samples[("corridor_shipment_transit_seconds_sum", frozenset(
        {"corridor": "CN-AU", "service_level": "standard"}.items()))] == 450 * H
    assert samples[("corridor_stage_dwell_seconds_count", frozenset(
        {"corridor": "CN-AU", "stage": "last_mile"}.items()))] == 3
    assert samples[("corridor_bottleneck_stage", frozenset({"corridor": "US-MX", "stage": "linehaul"}.items()))] == 1
    assert samples[("corridor_stream_time_seconds", frozenset())] == T0_EPOCH + 170 * H


def test_the_same_log_as_csv_and_parquet_gives_the_same_figures(log, tmp_path, capsys):
    reference = json.loads(run(log, "--format", "json", capsys=capsys).out)
    rows = []
    for kind, ev in events():
        row = {"kind": kind, **ev}
        if "order_ids" in row:
            row["order_ids"] = ";".join(row["order_ids"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "events.csv", index=False)
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    for name in ("events.csv", "events.parquet"):
        doc = json.loads(run(tmp_path / name, "--format", "json", capsys=capsys).out)
        assert doc["corridors"] == reference["corridors"], name
        assert doc["metrics"] == reference["metrics"], name
        assert doc["input"]["rejected"] == {}


def test_csv_markdown_html_and_table_are_parseable(log, tmp_path, capsys):
    out = run(log, "--format", "csv", capsys=capsys).out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["corridor"] for r in rows] == ["CN-AU", "DE-US", "CN-US", "US-MX"]     # most delivered first
    assert (rows[0]["delivered"], float(rows[0]["transit_p90_s"])) == ("3", 166 * H)
    stages = pd.read_csv(io.StringIO(run(log, "--format", "csv", "--table", "stages", capsys=capsys).out))
    row = stages[(stages.corridor == "CN-AU") & (stages.stage == "last_mile")].iloc[0]
    assert (row["shipments"], row["dwell_p95_s"]) == (3, 68 * H)
    # S5 is open: no dwell observed yet, one shipment in linehaul now, the bottleneck
    assert stages[stages.corridor == "US-MX"][["stage", "shipments", "open_now", "bottleneck"]] \
        .values.tolist() == [["linehaul", 0, 1, True]]

    md = run(log, "--format", "markdown", capsys=capsys).out
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert tables[0].startswith("| corridor | delivered |") and set(tables[1]) <= set("|-:")
    assert "| CN-AU | 3 | 2 | 1 | 66.7 |" in md

    html = tmp_path / "r.html"
    run(log, "--format", "html", "-o", html, capsys=capsys)
    cells = _html_cells(html.read_text())
    assert cells[0][:3] == ["corridor", "delivered", "on_time"] and ["CN-AU", "3", "2"] == cells[1][:3]

    text = run(log, capsys=capsys).out
    assert "Corridors" in text and "Stage dwell" in text and "US-MX" in text
    assert "note: p50/p90/p95 are exact quantiles" in text


def _html_cells(text):
    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell.strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data
    parser = Cells()
    parser.feed(text)
    return parser.rows


def test_top_limits_the_corridors(log, capsys):
    out = run(log, "--format", "csv", "--top", "2", capsys=capsys).out
    assert [r["corridor"] for r in csv.DictReader(io.StringIO(out))] == ["CN-AU", "DE-US"]
    assert "2 more corridors" in run(log, "--top", "2", capsys=capsys).out


def test_plot_is_a_png(log, tmp_path, capsys):
    png = tmp_path / "sla.png"
    run(log, "--format", "csv", "--plot", png, capsys=capsys)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_now_can_be_given(log, capsys):
    doc = json.loads(run(log, "--format", "json", "--now", "2025-03-02T00:00:00+00:00", capsys=capsys).out)
    # at h24 S5 (US-MX express, 72 h) is not yet overdue
    assert doc["corridors"]["US-MX"]["overdue"] == 0 and doc["now"] == "2025-03-02T00:00:00Z"


@pytest.mark.parametrize("argv, words", [
    (["/nonexistent/events.jsonl"], "/nonexistent/events.jsonl does not exist"),
    (["{log}", "--input-format", "csv-orders"], "csv-orders input needs --mapping FILE"),
    (["{log}", "--mapping", "{log}"], "--mapping is only for the input formats dcsa, epcis and csv-orders"),
    (["{log}", "--now", "yesterday"], "--now 'yesterday' is not an ISO-8601 time with a UTC offset"),
    (["{log}", "--sla-policy", "/nonexistent.toml"], "SLA policy file /nonexistent.toml does not exist"),
    (["{log}", "--top", "-1"], "--top must be >= 0"),
    (["{txt}"], "cannot tell the format of"),
])
def test_bad_files_and_flags_are_one_line_report_errors(log, tmp_path, argv, words):
    txt = tmp_path / "events.txt"
    txt.write_text("")
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = parser.parse_args([a.format(log=log, txt=txt) for a in argv])
    with pytest.raises(ReportError) as err:
        report.main(args)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_report_error_is_a_cli_error():
    from streams.cli import CliError
    assert issubclass(ReportError, CliError)
