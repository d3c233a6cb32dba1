"""Settings: env < flags, one-line errors, secrets from env or files and never in repr."""
import pytest

from streams.security import kafka_python_options
from streams.worker.app import faust_credentials
from streams.settings import Settings, SettingsError, env_table


def test_flags_override_env_and_env_overrides_defaults():
    s = Settings.from_env({"CORRIDOR_BROKER": "kafka://k1:9092", "CORRIDOR_PARTITIONS": "8",
                           "CORRIDOR_TOPIC_ORDERS": "mkt.orders"}, broker="kafka://k2:9093")
    assert (s.broker, s.partitions, s.topic_orders) == ("kafka://k2:9093", 8, "mkt.orders")
    assert s.bootstrap_servers == ["k2:9093"]
    assert s.input_topics == {"orders": "mkt.orders", "shipments": "shipments",
                              "customs": "customs-events"}


def test_every_field_with_an_env_var_is_listed_for_the_readme():
    names = {row[0] for row in env_table()}
    assert {"CORRIDOR_BROKER", "CORRIDOR_TOPIC_CUSTOMS", "CORRIDOR_SASL_PASSWORD",
            "CORRIDOR_LIVE_LAG_SECONDS"} <= names


def test_sasl_password_from_a_file_is_used_but_never_shown(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    s = Settings.from_env({"CORRIDOR_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "CORRIDOR_SASL_MECHANISM": "SCRAM-SHA-512",
                           "CORRIDOR_SASL_USERNAME": "corridor",
                           "CORRIDOR_SASL_PASSWORD_FILE": str(secret)})
    assert s.sasl_password == "s3cr3t-value"
    assert "s3cr3t" not in repr(s)
    creds = faust_credentials(s)
    assert (creds.username, creds.password, creds.mechanism.value) == ("corridor", "s3cr3t-value",
                                                                       "SCRAM-SHA-512")
    assert "s3cr3t" not in repr(creds)
    assert kafka_python_options(s) == {"security_protocol": "SASL_PLAINTEXT",
                                       "sasl_mechanism": "SCRAM-SHA-512",
                                       "sasl_plain_username": "corridor",
                                       "sasl_plain_password": "s3cr3t-value"}


def test_plaintext_has_no_credentials():
    assert faust_credentials(Settings()) is None
    assert kafka_python_options(Settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("env, message", [
    ({"CORRIDOR_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL needs CORRIDOR_SASL_USERNAME"),
    ({"CORRIDOR_SECURITY_PROTOCOL": "TLS"}, "security_protocol must be one of"),
    ({"CORRIDOR_SECURITY_PROTOCOL": "SSL", "CORRIDOR_SSL_CAFILE": "/nope/ca.pem"},
     "ssl_cafile /nope/ca.pem is not a readable file"),
    ({"CORRIDOR_SASL_PASSWORD_FILE": "/nope/pw"}, "CORRIDOR_SASL_PASSWORD_FILE=/nope/pw: cannot read it"),
    ({"CORRIDOR_PROFILE": "tansu"}, "profile must be one of kafka, embedded"),
    ({"CORRIDOR_STANDBY_REPLICAS": "-1"}, "standby_replicas must be >= 0, not -1"),
    ({"CORRIDOR_GC_THRESHOLDS": "700,10"}, "gc_thresholds must be three positive integers"),
    ({"CORRIDOR_GC_THRESHOLDS": "700,0,x"}, "gc_thresholds must be three positive integers"),
    ({"CORRIDOR_REGION_CODES": "SP,rj,BRA"}, "region_codes must be two capital letters each, not BRA, rj"),
])
def test_bad_settings_say_what_is_wrong(env, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        Settings.from_env(env)


def test_standby_replicas_reach_faust():
    from streams.worker.app import faust_settings
    assert faust_settings(Settings())["table_standby_replicas"] == 1
    assert faust_settings(Settings.from_env({"CORRIDOR_STANDBY_REPLICAS": "0"}))["table_standby_replicas"] == 0


def test_gc_thresholds_default_to_rare_full_collections_or_pythons_own():
    assert Settings().gc_threshold_values == (10000, 50, 1000)
    assert Settings.from_env({"CORRIDOR_GC_THRESHOLDS": "python"}).gc_threshold_values is None
    assert Settings.from_env({"CORRIDOR_GC_THRESHOLDS": "700,10,10"}).gc_threshold_values == (700, 10, 10)


def test_region_codes_are_a_set_of_two_letter_codes():
    assert Settings.from_env({"CORRIDOR_REGION_CODES": " SP, RJ ,,SP"}).region_code_set == {"SP", "RJ"}
    assert Settings.from_env({}).region_code_set == frozenset()
