"""Every alert links to its runbook section and to the dashboard that shows it, from one base.

deploy/links.toml holds `runbook_base` and `grafana_base`; deploy/k8s/prometheusrule.py (`make
dashboards`) writes them into the `runbook_url` / `dashboard_url` annotations of
deploy/prometheus/rules.yml and of the expected alerts in rules_test.yml. Checked here: each link
starts with the configured base, each runbook anchor is a heading of deploy/RUNBOOK.md, each
dashboard uid is a dashboard of deploy/grafana/dashboards/ and each `var-` a variable of it, the
rendered links of the promtool cases name every variable, and changing the bases in one place
moves every link (and the promtool cases still pass).
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
RUNBOOK = DEPLOY / "RUNBOOK.md"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
GENERATOR = DEPLOY / "k8s" / "prometheusrule.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("corridor_prometheusrule", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def alerts() -> dict[str, dict]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def dashboards() -> dict[str, dict]:
    """uid -> {variable name: variable} of every committed dashboard."""
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        data = json.loads(path.read_text())
        out[data["uid"]] = {v["name"]: v for v in data["templating"]["list"]}
    return out


def firing_cases():
    """(alert name, expected labels, expected annotations) of every firing promtool case."""
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            for exp in case.get("exp_alerts") or []:
                yield case["alertname"], exp.get("exp_labels", {}), exp["exp_annotations"]


def test_links_toml_has_the_two_bases():
    links = gen.load_links()
    assert set(links) == {"runbook_base", "grafana_base"}
    assert links["runbook_base"].endswith("/deploy/RUNBOOK.md")


def test_every_alert_links_its_runbook_section_and_a_dashboard_from_the_configured_bases():
    links = gen.load_links()
    rules = alerts()
    assert len(rules) >= 13
    headings = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)}
    for name, rule in rules.items():
        ann = rule["annotations"]
        assert ann["runbook_url"] == f"{links['runbook_base']}#{name.lower()}", name
        assert name.lower() in headings, f"{name}: no section '### {name}' in RUNBOOK.md"
        assert ann["dashboard_url"].startswith(links["grafana_base"] + "/d/"), name
    assert gen.link_problems(yaml.safe_load(RULES.read_text()), links) == []


def dashboard_link(url: str, grafana_base: str) -> tuple[str, list[tuple[str, str]]]:
    """(uid, [(variable, value)]) of a dashboard_url."""
    assert url.startswith(grafana_base + "/d/"), url
    parts = urlsplit(url[len(grafana_base):])
    uid = parts.path.removeprefix("/d/")
    params = parse_qsl(parts.query, keep_blank_values=True)
    assert all(k.startswith("var-") for k, _ in params), url
    return uid, [(k.removeprefix("var-"), v) for k, v in params]


def test_each_dashboard_link_names_a_dashboard_and_its_variables():
    links = gen.load_links()
    boards = dashboards()
    assert {"corridor-overview", "corridor-bottlenecks", "corridor-workers"} <= set(boards)
    for name, rule in alerts().items():
        uid, params = dashboard_link(rule["annotations"]["dashboard_url"], links["grafana_base"])
        assert uid in boards, f"{name}: no dashboard with uid {uid} in {DASHBOARDS}"
        variables = boards[uid]
        for var, value in params:
            assert var in variables, f"{name}: dashboard {uid} has no variable {var}"
            template = re.fullmatch(r"\{\{ \$labels\.([a-z_]+) \| urlquery \}\}", value)
            if template is None and variables[var]["type"] == "custom":    # a fixed choice
                assert value in variables[var]["query"].split(","), (name, var, value)
        # a corridor alert opens its dashboard on its corridor (and stage)
        if "$labels.corridor" in rule["annotations"]["summary"]:
            assert ("corridor", "{{ $labels.corridor | urlquery }}") in params, name
        if "$labels.stage" in rule["annotations"]["summary"]:
            assert ("stage", "{{ $labels.stage | urlquery }}") in params, name


def test_the_rendered_links_of_the_promtool_cases_fill_every_variable():
    """What Alertmanager receives: each dashboard variable has the alert's value (a label the
    alert does not carry would render as "<no value>")."""
    links = gen.load_links()
    seen = set()
    for name, labels, ann in firing_cases():
        seen.add(name)
        assert ann["runbook_url"] == f"{links['runbook_base']}#{name.lower()}", name
        uid, params = dashboard_link(ann["dashboard_url"], links["grafana_base"])
        for var, value in params:
            assert value and "no value" not in value, (name, ann["dashboard_url"])
            if var in ("corridor", "stage"):
                assert value == labels[var], (name, var, value, labels)
    assert seen == set(alerts())


def test_changing_the_bases_in_links_toml_moves_every_link(promtool, tmp_path):
    """One change of links.toml, through the generator, rewrites every runbook and dashboard link
    in rules.yml and rules_test.yml; the promtool cases still pass with the new links."""
    old = gen.load_links()
    new = {"runbook_base": "https://wiki.example.org/ops/corridor-runbook",
           "grafana_base": "https://monitoring.example.org/grafana"}
    rules = gen.apply_links(RULES.read_text(), new)
    cases = gen.apply_links(RULES_TEST.read_text(), new)
    for text in (rules, cases):
        assert old["runbook_base"] not in text and old["grafana_base"] not in text
    assert rules.count(new["runbook_base"] + "#") == len(alerts())
    assert rules.count(new["grafana_base"] + "/d/") == len(alerts())
    assert gen.link_problems(yaml.safe_load(rules), new) == []
    assert gen.apply_links(rules, new) == rules                       # idempotent
    assert gen.apply_links(rules, old) == RULES.read_text()           # and back
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "rules_test.yml").write_text(cases)
    proc = subprocess.run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ... and the cases are sensitive to the links: the new rules against the old expectations
    # fail (the first group of cases is enough; the whole file takes half a minute)
    committed = yaml.safe_load(RULES_TEST.read_text())
    committed["tests"] = committed["tests"][:1]
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(committed, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", "rules_test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "wiki.example.org" in proc.stdout + proc.stderr
    assert "alertname: CorridorOnTimeRateLow" in proc.stdout + proc.stderr


def test_committed_files_are_in_step_with_links_toml():
    proc = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_an_alert_without_a_dashboard_link_is_refused():
    links = gen.load_links()
    rules = yaml.safe_load(RULES.read_text())
    rule = next(r for r in rules["groups"][0]["rules"] if r.get("alert") == "CorridorNoTraffic")
    del rule["annotations"]["dashboard_url"]
    rule["annotations"]["runbook_url"] = "https://elsewhere.example/RUNBOOK.md#corridornotraffic"
    problems = gen.link_problems(rules, links)
    assert len(problems) == 2 and all(p.startswith("CorridorNoTraffic: ") for p in problems)


@pytest.mark.parametrize("toml,why", [
    ('runbook_base = "https://x.example/RUNBOOK.md"\n', "grafana_base"),
    ('runbook_base = "https://x.example/RUNBOOK.md"\ngrafana_base = "https://g.example/"\n',
     "trailing slash"),
    ('runbook_base = "https://x.example/R.md#top"\ngrafana_base = "https://g.example"\n', "'#'"),
    ('runbook_base = "ftp://x.example/R.md"\ngrafana_base = "https://g.example"\n', "runbook_base"),
    ('runbook_base = "https://x.example/R.md"\ngrafana_base = "https://g.example"\nextra = 1\n',
     "unknown keys"),
])
def test_a_bad_links_toml_is_refused(tmp_path, toml, why):
    path = tmp_path / "links.toml"
    path.write_text(toml)
    with pytest.raises(gen.LinkError, match=re.escape(why)):
        gen.load_links(path)
