"""Topic names and the creation request (issue 15: replication factor and min.insync.replicas are
settings; before, every topic corridor or Faust created had replication factor 1, which a cluster
with min.insync.replicas=2 refuses to write to)."""
import pytest

from streams.broker.embedded import creation_request
from streams.broker.provision import plan
from streams.settings import Settings, SettingsError
from streams.topics import changelog_topics, faust_topics, topic_configs


def test_the_creation_request_carries_replication_factor_min_isr_and_compaction():
    s = Settings.from_env({"CORRIDOR_REPLICATION_FACTOR": "3", "CORRIDOR_MIN_INSYNC_REPLICAS": "2"})
    request = creation_request({"a-totals-changelog": 4, "a-order-links": 4},
                               compact={"a-totals-changelog"},
                               replication_factor=s.replication_factor, configs=topic_configs(s))
    assert request == {
        "a-totals-changelog": {"num_partitions": 4, "replication_factor": 3,
                               "configs": {"min.insync.replicas": "2", "cleanup.policy": "compact"}},
        "a-order-links": {"num_partitions": 4, "replication_factor": 3,
                          "configs": {"min.insync.replicas": "2"}}}


def test_by_default_the_broker_decides():
    s = Settings()
    assert (s.replication_factor, topic_configs(s)) == (-1, {})
    assert creation_request({"t": 2}, replication_factor=s.replication_factor) == {
        "t": {"num_partitions": 2, "replication_factor": -1}}


@pytest.mark.parametrize("env, message", [
    ({"CORRIDOR_REPLICATION_FACTOR": "0"}, "replication_factor must be >= 1 or -1"),
    ({"CORRIDOR_REPLICATION_FACTOR": "2", "CORRIDOR_MIN_INSYNC_REPLICAS": "3"},
     "min_insync_replicas must be 0 (the broker's default) .. the replication factor 2, not 3"),
    ({"CORRIDOR_CREATE_INPUT_TOPICS": "maybe"}, "CORRIDOR_CREATE_INPUT_TOPICS='maybe' is not a valid bool"),
])
def test_bad_topic_settings_say_what_is_wrong(env, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_the_changelog_names_are_the_tables_of_the_app():
    """Faust names a changelog "<app id>-<table>-changelog"; provisioning must name the same."""
    from streams.worker.app import create_app
    s = Settings.from_env({}, app_id="prov-names", partitions=3)
    app = create_app(s)
    assert {t.changelog_topic.get_topic_name(): t.partitions or s.partitions
            for t in app.tables.values()} == changelog_topics(s)
    # the two GlobalTables, the stream clock and the fleet's lateness model counts, on one
    # partition; the partitioned tables on the settings' partitions
    assert changelog_topics(s) == {"prov-names-timelines-changelog": 3,
                                   "prov-names-orders-changelog": 3,
                                   "prov-names-totals-changelog": 3,
                                   "prov-names-clock-changelog": 1,
                                   "prov-names-risk-changelog": 1}
    assert faust_topics(s)["prov-names-__assignor-__leader"] == 1


def test_the_plan_lists_inputs_first_and_every_role():
    s = Settings.from_env({}, app_id="a", partitions=2)
    rows = plan(s)
    assert [r[0] for r in rows[:3]] == ["customs-events", "orders", "shipments"]
    assert {role for _, _, role in rows} == {"input", "dead letters", "internal",
                                             "changelog (compacted)", "faust assignor"}
    assert len(rows) == 17          # 3 inputs, 3 dead letters, 5 internal, 5 changelogs, 1 assignor
