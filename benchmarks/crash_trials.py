"""Crash trials: repeats tests/e2e/test_crash.py on fresh embedded brokers and prints how many
trials reproduced the clean figures (`python benchmarks/crash_trials.py 10`). Run it on a loaded
machine too: that is where faust's lost changelog writes showed (docs/semantics.md)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from test_crash import test_sigkill_mid_stream_then_recovery_gives_the_clean_figures  # noqa: E402


def main() -> int:
    import tempfile
    from streams.broker.embedded import EmbeddedBroker
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ok = 0
    for i in range(trials):
        broker = EmbeddedBroker(port=0).start()
        try:
            test_sigkill_mid_stream_then_recovery_gives_the_clean_figures(
                broker, Path(tempfile.mkdtemp(prefix="corridor-crash-")))
            ok += 1
            print(f"trial {i + 1}: clean figures", flush=True)
        except AssertionError as exc:
            print(f"trial {i + 1}: DIFFERENT: {exc}", flush=True)
        finally:
            broker.stop()
    print(f"{ok} of {trials} trials reproduced the clean figures")
    return 0 if ok == trials else 1


if __name__ == "__main__":
    raise SystemExit(main())
