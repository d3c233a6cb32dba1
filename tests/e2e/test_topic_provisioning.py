"""Topic provisioning against the real embedded broker (issue 15, "Fleet files"):

- `corridor topics` creates every topic of a deployment (inputs, internal, dead letters, the
  changelogs, compacted, and Faust's assignor topic) with the partitions, replication factor and
  min.insync.replicas of the settings, and says what it did; run again, it finds them all present;
- `corridor topics --check` creates nothing and exits 1 while a topic is missing;
- a worker with CORRIDOR_CREATE_INPUT_TOPICS=false and a mistyped input topic stops at once with
  one line and exit status 2, and creates nothing (before: it created an empty topic and waited).
"""
import os
import subprocess
import sys

import pytest
from kafka.admin import KafkaAdminClient

from harness import REPO, unique_app_id

pytestmark = pytest.mark.e2e


def corridor(*args, env, timeout=90):
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=REPO,
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout)


def deployment(broker, app_id: str, **extra) -> dict:
    return {"CORRIDOR_BROKER": broker.url, "CORRIDOR_PROFILE": "embedded", "CORRIDOR_APP_ID": app_id,
            "CORRIDOR_TOPIC_ORDERS": f"{app_id}.orders", "CORRIDOR_TOPIC_SHIPMENTS": f"{app_id}.shipments",
            "CORRIDOR_TOPIC_CUSTOMS": f"{app_id}.customs-events", "CORRIDOR_PARTITIONS": "3", **extra}


def topics_of(broker, prefix: str) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        names = [n for n in admin.list_topics() if n.startswith(prefix)]
        return ({t.get("name") or t.get("topic"): len(t["partitions"]) for t in admin.describe_topics(names)}
                if names else {})
    finally:
        admin.close()


def test_corridor_topics_creates_every_topic_once_with_the_settings(broker):
    app = unique_app_id("prov")
    env = deployment(broker, app, CORRIDOR_REPLICATION_FACTOR="1", CORRIDOR_MIN_INSYNC_REPLICAS="1")

    check = corridor("topics", "--check", env=env)
    assert check.returncode == 1, check.stderr
    assert check.stdout.count("MISSING") == 17
    assert topics_of(broker, app) == {}                       # --check created nothing

    first = corridor("topics", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == (f"17 topics at {broker.url} (partitions 3, replication factor 1, "
                        "min.insync.replicas 1)")
    assert sum(ln.endswith(" created") for ln in lines) == 17
    assert topics_of(broker, app) == {
        f"{app}.orders": 3, f"{app}.shipments": 3, f"{app}.customs-events": 3,
        f"{app}.orders.dlq": 3, f"{app}.shipments.dlq": 3, f"{app}.customs-events.dlq": 3,
        f"{app}-order-links": 3, f"{app}-shipment-orders": 3,
        f"{app}-rerouted-orders": 3, f"{app}-rerouted-shipments": 3, f"{app}-rerouted-customs": 3,
        f"{app}-timelines-changelog": 3, f"{app}-orders-changelog": 3, f"{app}-totals-changelog": 3,
        f"{app}-clock-changelog": 1, f"{app}-risk-changelog": 1, f"{app}-__assignor-__leader": 1}
    # The topic configs asked for (compaction, min.insync.replicas) are checked in
    # tests/unit/test_topics.py: Tansu answers DescribeConfigs with no entries.

    again = corridor("topics", "--check", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" present") == 17


def test_corridor_topics_refuses_a_topic_with_the_wrong_partition_count(broker):
    app = unique_app_id("prov")
    assert corridor("topics", env=deployment(broker, app)).returncode == 0
    result = corridor("topics", "--check", env=deployment(broker, app, CORRIDOR_PARTITIONS="4"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("corridor topics: 14 topic(s) have the wrong partition count "
                                     "(CORRIDOR_PARTITIONS=4)")


def test_a_worker_that_may_not_create_inputs_refuses_a_mistyped_topic(broker):
    app = unique_app_id("prov")
    env = deployment(broker, app)
    assert corridor("topics", env=env).returncode == 0
    mistyped = dict(env, CORRIDOR_TOPIC_SHIPMENTS=f"{app}.shipmnets", CORRIDOR_CREATE_INPUT_TOPICS="false")
    result = corridor("worker", env=mistyped, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"corridor worker: input topic '{app}.shipmnets' (CORRIDOR_TOPIC_SHIPMENTS) does not exist at "
        f"{broker.url} and CORRIDOR_CREATE_INPUT_TOPICS=false: check the name, or provision "
        "(corridor topics)"]
    assert f"{app}.shipmnets" not in topics_of(broker, app)
