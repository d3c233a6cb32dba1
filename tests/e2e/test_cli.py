"""The `corridor` command's error handling: one line on stderr, exit status 2, nothing started."""
import socket
import subprocess
import sys

import pytest

from harness import REPO


def corridor(*args, env=None, timeout=60):
    import os
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, env, message", [
    (["worker", "--profile", "bogus"], {}, "argument --profile: invalid choice: 'bogus'"),
    (["worker", "--sla-policy", "/nonexistent/policy.toml"], {},
     "SLA policy file /nonexistent/policy.toml does not exist"),
    (["worker"], {"CORRIDOR_PARTITIONS": "four"}, "CORRIDOR_PARTITIONS='four' is not a valid int"),
    (["worker", "--web-port", "70000"], {}, "argument --web-port: port must be 0..65535, not 70000"),
    (["simulate", "--bogus-flag"], {}, "unrecognized arguments: --bogus-flag"),
    (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
])
def test_bad_flags_and_settings_are_one_line_and_exit_2(args, env, message):
    result = corridor(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_bad_policy_file_content_names_the_problem(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[promise]\nexpress = -4\n")
    result = corridor("worker", "--sla-policy", str(policy))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"corridor worker: {policy} [promise]: express must be a positive "
                                     "number of hours, not -4")


def test_broker_refuses_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = corridor("broker", "--port", str(port), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"corridor broker: port {port} on 127.0.0.1 is already in use; "
                                     "pick another with --port")
