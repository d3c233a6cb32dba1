"""`corridor shipment ID`: one shipment's timeline from a worker, as a table on the terminal.

`render(doc)` turns the JSON of a worker's GET /shipments/{id} (streams/domain/timeline.py
`describe()`) into text: a header (shipment, corridor, service level, status, SLA status, promise,
the stream's now), the stages (started, duration or time so far, target, time beyond target; the
current stage marked ``>``), the events (time, source, event, info) and a last line saying where
the shipment is now. It is pure: no I/O, no clock; every time shown comes from the document. Times
are UTC to the minute; ``--json`` prints the worker's document as it is, to the second.

`main()` fetches the document (``--url``, else CORRIDOR_WORKER_URL, else http://127.0.0.1:6066):
a shipment the worker does not know is one line and exit status 1; an unreachable worker or an
answer that is not a shipment view is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime

DEFAULT_URL = "http://127.0.0.1:6066"
URL_ENV = "CORRIDOR_WORKER_URL"
EXIT_NOT_FOUND = 1


# ---- rendering (pure) ------------------------------------------------------------------------------
def span(seconds: float | None) -> str:
    """A duration as people read it: 45s, 30m, 1h 30m, 10h, 2d, 2d 12h, 2d 00h 05m."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours or (days and minutes):
        parts.append(f"{hours:02d}h" if days else f"{hours}h")
    if minutes:
        parts.append(f"{minutes:02d}m" if parts else f"{minutes}m")
    return " ".join(parts)


def when(value: str | None) -> str:
    """An ISO-8601 time of the view as YYYY-MM-DD HH:MM (UTC, as the worker writes them)."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _table(header: list[str], rows: list[list[str]], marks: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for mark, row in zip(["", *marks], [header, *rows]):
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
        out.append(f"{mark or ' '} {cells}".rstrip())
    return out


def _sla(doc: dict) -> str:
    sla = doc.get("sla")
    due = _epoch(doc.get("promised_delivery_at"))
    ended = _epoch(doc.get("ended_at"))
    now = _epoch(doc.get("now"))
    if sla == "on_time":
        return "on time" + (f" (delivered {span(due - ended)} before the promise)"
                            if due is not None and ended is not None and due > ended else "")
    if sla == "late":
        return "LATE" + (f" (delivered {span(ended - due)} after the promise)"
                         if due is not None and ended is not None else "")
    if sla == "overdue":
        return "OVERDUE" + (f" by {span(now - due)}" if due is not None and now is not None else "")
    if sla == "on_track":
        return "on track" + (f" ({span(due - now)} left)" if due is not None and now is not None else "")
    if due is None:
        return "unknown (no order joined yet, so no promise)"
    return f"none ({doc.get('status')})"


def _where_now(doc: dict) -> str:
    status = doc.get("status") or "open"
    if doc.get("ended_at"):
        text = f"Now: {status} at {when(doc['ended_at'])}"
        if doc.get("transit_seconds") is not None:
            text += f", {span(doc['transit_seconds'])} after the order was placed"
        return text + "."
    stage = doc.get("stage")
    if not stage:
        return f"Now: {status}."
    text = f"Now: in {stage} since {when(doc.get('stage_since'))}"
    row = next((s for s in reversed(doc.get("stages") or []) if s.get("stage") == stage), None)
    if row is not None:
        text += f", {span(row.get('elapsed_seconds'))} so far"
        if row.get("excess_seconds"):
            text += f", {span(row['excess_seconds'])} beyond its {span(row.get('target_seconds'))} target"
        elif row.get("target_seconds") is not None:
            text += f", within its {span(row['target_seconds'])} target"
    return text + "."


def _prediction(p: dict | None) -> str | None:
    """One line: P(late), the delivery range and the stage it is judged in (docs/risk.md)."""
    if not p:
        return None
    text = (f"Predicted: P(late) {p['p_late']:.0%}{' - AT RISK' if p.get('at_risk') else ''}, "
            f"judged by its time in {p.get('stage')}")
    if p.get("delivery_p50"):
        text += (f"; delivery likely {when(p.get('delivery_p10'))} to {when(p.get('delivery_p90'))}"
                 f" (median {when(p.get('delivery_p50'))}; compared with its {p.get('compared_with')})")
    return text + "."


def render(doc: dict) -> str:
    """The terminal view of one /shipments/{id} document (timeline.describe())."""
    lines = [f"Shipment {doc.get('shipment_id')}  (times in UTC)"]
    fields = [("corridor", doc.get("corridor") or "unknown"),
              ("service level", doc.get("service_level") or "unknown"),
              ("status", doc.get("status") or "open"),
              ("SLA", _sla(doc)),
              ("promised", when(doc.get("promised_delivery_at"))),
              ("now", f"{when(doc.get('now'))} (the stream's event time)"),
              ("orders", ", ".join(doc.get("order_ids") or []) or "-")]
    if doc.get("carrier"):
        fields.append(("carrier", doc["carrier"]))
    if doc.get("tracking_number"):
        fields.append(("tracking", doc["tracking_number"]))
    width = max(len(name) for name, _ in fields)
    lines += [f"  {name.ljust(width)}  {value}" for name, value in fields]

    lines.append("")
    stages = doc.get("stages") or []
    if stages:
        rows, marks = [], []
        for s in stages:
            current = s.get("seconds") is None and s.get("stage") == doc.get("stage")
            duration = span(s.get("seconds")) if s.get("seconds") is not None \
                else f"{span(s.get('elapsed_seconds'))} so far"
            rows.append([s.get("stage") or "?", when(s.get("started_at")), duration,
                         span(s.get("target_seconds")),
                         span(s["excess_seconds"]) if s.get("excess_seconds") else "-"])
            marks.append(">" if current else "")
        lines += _table(["stage", "started", "duration", "target", "beyond target"], rows, marks)
    else:
        lines.append("  (no stage reached yet)")

    lines.append("")
    events = doc.get("events") or []
    if events:
        lines += _table(["time", "source", "event", "info"],
                        [[when(e.get("occurred_at")), e.get("source") or "", e.get("event_type") or "",
                          e.get("info") or ""] for e in events], [""] * len(events))
    else:
        lines.append("  (no events)")

    lines.append("")
    lines.append(_where_now(doc))
    prediction = _prediction(doc.get("prediction"))
    if prediction:
        lines.append(prediction)
    late = doc.get("late_events") or 0
    if late:
        lines.append(f"{late} event{'s' if late != 1 else ''} arrived after the shipment had ended "
                     "(kept in the list, not in the figures).")
    return "\n".join(lines)


# ---- CLI glue (I/O) ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shipment_id", metavar="ID", help="shipment id")
    parser.add_argument("--url", help=f"a worker's base URL (default: ${URL_ENV}, else {DEFAULT_URL}); "
                                      "any worker of the group answers for every shipment")
    parser.add_argument("--json", action="store_true", help="print the worker's JSON document instead")


def fetch(base: str, shipment_id: str, timeout: float = 10.0) -> tuple[int, object]:
    """(HTTP status, parsed JSON body or None); raises OSError when the worker cannot be reached."""
    import urllib.error
    import urllib.parse
    import urllib.request
    url = f"{base}/shipments/{urllib.parse.quote(shipment_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def main(args: argparse.Namespace, environ=None, out=None, err=None) -> int:
    """0 with the view on stdout; 1 when the worker does not know the shipment; CliError (exit 2)
    for a bad URL, an unreachable worker or an answer that is not a shipment view."""
    from streams.errors import CliError
    environ = os.environ if environ is None else environ
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    base = (args.url or environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError(f"--url {base} is not an http:// or https:// URL")
    if not args.shipment_id:
        raise CliError("the shipment id is empty")
    try:
        status, body = fetch(base, args.shipment_id)
    except (OSError, ValueError) as exc:      # URLError, refused, timeout; ValueError: a malformed URL
        reason = getattr(exc, "reason", None) or exc
        raise CliError(f"cannot reach a worker at {base}: {reason}") from None
    if status == 404:
        print(f"corridor shipment: shipment {args.shipment_id} not found at {base}", file=err)
        return EXIT_NOT_FOUND
    if status != 200:
        detail = body.get("error") if isinstance(body, dict) and body.get("error") else "no detail"
        raise CliError(f"the worker at {base} answered HTTP {status}: {detail}")
    if not isinstance(body, dict) or "shipment_id" not in body:
        raise CliError(f"the answer of {base} is not a corridor shipment view")
    if args.json:
        print(json.dumps(body, indent=2), file=out)
    else:
        print(render(body), file=out)
    return 0
