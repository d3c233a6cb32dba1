"""Summarise a `py-spy record -f raw` profile: top frames by own time and by inclusive time.

The raw format is one collapsed stack per line, `outer;...;leaf COUNT`, frames as
`function (file:line)`. Frames are merged by function and file (line numbers dropped), paths are
shortened to site-packages/... or the repository. Idle samples (recorded with --idle: the event
loop waiting in select/epoll) are counted separately so the busy share is visible.

    python benchmarks/pyspy_summary.py profile.raw [--top 15] [--thread MainThread]

Record with `py-spy record -p PID --idle --threads -f raw -o profile.raw`: --threads puts the
thread name first on each stack (the summary is for the main thread, where the event loop and
the agents run); --idle keeps the samples of waiting threads, so the idle share is measured.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker != "lib/python3" else "stdlib/" + tail.split("/", 1)[-1]
    return path


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['func']} ({short_path(m['file'])})"


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outer..leaf, samples) per collapsed stack; thread '' without --threads."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        raw = [f for f in stack.split(";") if f]
        thread = ""
        if raw and raw[0].startswith("thread ("):
            thread = raw.pop(0).split(": ", 1)[-1]
        stacks.append((thread, [frame_name(f) for f in raw], n))
    return stacks


#: Leaf frames where a thread waits (blocked in C with the GIL released), sampled thanks to --idle.
IDLE = ("EpollSelector.select (", "SelectSelector.select (", "PollSelector.select (",
        "_worker (concurrent/futures/thread.py)", "Condition.wait (", "Event.wait (")


def is_idle(frames: list[str]) -> bool:
    leaf = frames[-1] if frames else ""
    return leaf.startswith(IDLE)


def area(frame: str) -> str:
    """The package a frame's file belongs to: streams, faust, mode, aiokafka, asyncio, ..."""
    m = re.search(r"\(([^()]*)\)$", frame)
    path = m.group(1) if m else ""
    if path.startswith("stdlib/"):
        part = path.split("/")[1]
        return part if part in ("asyncio", "json", "concurrent") else "stdlib"
    return path.split("/", 1)[0].removesuffix(".py") or "?"


#: Where the main thread's busy time goes, by a frame anywhere on the stack (so rows overlap).
CATEGORIES = (
    ("agents: the `timelines` and `join_orders` bodies",
     ("create_app.<locals>.timelines", "create_app.<locals>.join_orders")),
    ("· of which table writes (`table[k] = v`; the changelog goes at the commit)", ("ManagedUserDict.__setitem__",)),
    ("· of which contract decoding (`Decoder.decode`)", ("Decoder.decode",)),
    ("· of which the domain (`timeline.apply`, `orders.apply_*`)",
     ("apply (streams/domain/timeline", "apply_order_event", "apply_link")),
    ("· of which sends to the internal join topics", ("Pipeline.send_internal", "Topic.send (")),
    ("aiokafka's sender: building and writing produce requests (one per record batch)",
     ("Sender.", "SendProduceReqHandler.")),
    ("faust's ProducerBuffer: pushing buffered changelog records to aiokafka",
     ("ProducerBuffer._handle_pending",)),
    ("faust's fetcher: handing fetched records to the streams", ("Fetcher._fetcher",)),
    ("offset commits, with the written-behind changelogs", ("Consumer._commit_handler", "Consumer.commit (")),
    ("/metrics and the web server", ("generate_latest", "Web.", "aiohttp")),
)


def categories(stacks_busy: list[tuple[list[str], int]]) -> list[tuple[str, int]]:
    out = []
    for label, prefixes in CATEGORIES:
        n = sum(c for frames, c in stacks_busy if any(f.startswith(prefixes) for f in frames))
        out.append((label, n))
    return out


def summarise(path: Path, top: int = 15, thread: str = "MainThread") -> dict:
    """Per-thread busy/idle, and for `thread` (all threads if absent) the top frames by own and
    inclusive busy samples and own busy samples by package."""
    stacks = parse(path)
    threads: dict[str, list[int]] = {}
    for t, frames, n in stacks:
        row = threads.setdefault(t or "all", [0, 0])
        row[0] += n
        row[1] += n if is_idle(frames) else 0
    chosen = [(f, n) for t, f, n in stacks if t == thread] or [(f, n) for _, f, n in stacks]
    total = sum(n for _, n in chosen)
    own: Counter = Counter()
    incl: Counter = Counter()
    areas: Counter = Counter()
    idle = 0
    busy_stacks = []
    for frames, n in chosen:
        if not frames or is_idle(frames):
            idle += n
            continue
        busy_stacks.append((frames, n))
        own[frames[-1]] += n
        areas[area(frames[-1])] += n
        for f in set(frames):
            incl[f] += n
    return {"thread": thread, "samples": total, "idle": idle, "busy": total - idle,
            "threads": {t: {"samples": a, "idle": b} for t, (a, b) in threads.items()},
            "own": own.most_common(top), "inclusive": incl.most_common(top + 40),
            "areas": areas.most_common(), "categories": categories(busy_stacks)}


#: Frames on every busy stack of the main thread (boot and the event loop): left out of the
#: inclusive table, which is about what runs inside the loop.
_SCAFFOLD = ("_run_module_as_main", "_run_code", "<module>", "main (streams/cli.py", "run_worker",
             "App.main", "Command.", "Group.invoke", "Context.invoke", "pass_context",
             "Worker.execute_from_commandline", "BaseEventLoop.run_", "BaseEventLoop._run_once",
             "Handle._run", "Thread._bootstrap", "Thread.run")


def markdown(s: dict, top: int = 15) -> str:
    busy = s["busy"] or 1
    lines = ["| thread | samples | busy |", "|---|---:|---:|"]
    for t, row in sorted(s["threads"].items(), key=lambda kv: -(kv[1]["samples"] - kv[1]["idle"])):
        lines.append(f"| {t} | {row['samples']} | {100 * (row['samples'] - row['idle']) / max(1, row['samples']):.0f}% |")
    lines += ["", f"{s['thread']}: {s['samples']} samples, {100 * s['idle'] / max(1, s['samples']):.0f}% "
              f"idle (waiting in select), {100 * s['busy'] / max(1, s['samples']):.0f}% busy. "
              "Shares below are of its busy samples.", "",
              "| where the busy time goes (inclusive; rows overlap) | % busy |", "|---|---:|"]
    lines += [f"| {label} | {100 * n / busy:.1f} |" for label, n in s.get("categories", [])]
    lines += ["", "| own time by package | % busy |", "|---|---:|"]
    lines += [f"| {a} | {100 * n / busy:.1f} |" for a, n in s["areas"][:10]]
    lines += ["", "| own time (leaf frame) | % busy |", "|---|---:|"]
    lines += [f"| `{f}` | {100 * n / busy:.1f} |" for f, n in s["own"][:top]]
    lines += ["", "| inclusive (frame anywhere on the stack; loop scaffolding left out) | % busy |",
              "|---|---:|"]
    incl = [(f, n) for f, n in s["inclusive"] if not f.startswith(_SCAFFOLD)][:top]
    lines += [f"| `{f}` | {100 * n / busy:.1f} |" for f, n in incl]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--thread", default="MainThread")
    args = ap.parse_args()
    print(markdown(summarise(args.raw, args.top, args.thread), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
