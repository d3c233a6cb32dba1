"""Bad flags and files are one line on stderr and exit status 2, found before anything reaches for
the broker (issue 15: a traceback for a bad port; simulate and replay tried Kafka first). The
broker address given is unreachable: had a command tried it, it would say "cannot reach Kafka"."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = ["--broker", "kafka://127.0.0.1:1"]


def corridor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["broker", "--port", "99999"], "port must be 0..65535, not 99999"),
    (["broker", "--port", "http"], "'http' is not a port number"),
    (["worker", "--web-port", "70000", *NOWHERE], "port must be 0..65535, not 70000"),
    (["demo", "--web-port", "-1"], "port must be 0..65535, not -1"),
    (["simulate", "--rate", "-5", *NOWHERE], "--rate: must be >= 0"),
    (["replay", "--input-format", "dcsa", "README.md", *NOWHERE],
     "README.md is not a DCSA document: not_json"),
    (["replay", "--input-format", "epcis", "pyproject.toml", *NOWHERE],
     "pyproject.toml is not an EPCIS document"),
])
def test_a_bad_flag_or_file_is_one_line_and_status_2(args, words):
    done = corridor(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"corridor {args[0]}") and words in lines[0]
    assert "Kafka" not in lines[0] and "Traceback" not in done.stderr
