"""Writes what is generated from deploy/prometheus/rules.yml and deploy/links.toml:

1. the alert links: the base of every `runbook_url` and `dashboard_url` annotation in
   deploy/prometheus/rules.yml, and of the expected annotations in rules_test.yml, is set to
   `runbook_base` / `grafana_base` of deploy/links.toml (the part after the base, the RUNBOOK.md
   anchor or the dashboard uid and variables, is written with each rule);
2. deploy/k8s/prometheusrule.yaml: rules.yml as a Prometheus Operator PrometheusRule, so compose
   and Kubernetes evaluate the same rules.

    python deploy/k8s/prometheusrule.py            # after editing rules.yml or links.toml
    python deploy/k8s/prometheusrule.py --check    # exit 1 if any of the three files is out of date

`make dashboards` runs it; tests/ops/test_deploy.py and tests/ops/test_links.py run the check.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
LINKS = ROOT / "deploy" / "links.toml"
OUT = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
HEADER = ("# GENERATED from deploy/prometheus/rules.yml by deploy/k8s/prometheusrule.py: do not edit.\n"
          "# Comments (thresholds, runbook) are in rules.yml and deploy/RUNBOOK.md.\n")

#: `runbook_url: <base>#<anchor>` (the value optionally quoted), one per line.
RUNBOOK_LINE = re.compile(r"""(?m)^(?P<head>[ \t]+runbook_url:[ \t]*)(?P<q>['"]?)(?P<base>[^\s'"#]*)"""
                          r"""(?P<rest>#[^\s'"]+)(?P=q)[ \t]*$""")
#: `dashboard_url: <base>/d/<uid>[?var-...]` (the value optionally quoted), one per line.
DASHBOARD_LINE = re.compile(r"""(?m)^(?P<head>[ \t]+dashboard_url:[ \t]*)(?P<q>['"]?)(?P<base>\S*?)"""
                            r"""(?P<rest>/d/[A-Za-z0-9_-]+(?:\?[^'"\n]*)?)(?P=q)[ \t]*$""")


class LinkError(ValueError):
    """deploy/links.toml or an alert's links are not usable."""


def load_links(path: Path = LINKS) -> dict[str, str]:
    """{"runbook_base": ..., "grafana_base": ...} from links.toml, checked: http(s) URLs without
    a trailing slash, quotes or spaces; no `#` in the runbook base, no `/d/` in the Grafana base
    (each marks where the base ends in an annotation)."""
    data = tomllib.loads(path.read_text())
    links = {}
    for key in ("runbook_base", "grafana_base"):
        value = data.get(key)
        if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s'\"]+", value) \
                or value.endswith("/"):
            raise LinkError(f"{path}: {key} must be an http(s) URL without a trailing slash, "
                            f"got {value!r}")
        links[key] = value
    if "#" in links["runbook_base"]:
        raise LinkError(f"{path}: runbook_base must not contain '#' (the anchor follows it)")
    if "/d/" in links["grafana_base"]:
        raise LinkError(f"{path}: grafana_base must not contain '/d/' (the dashboard path follows it)")
    unknown = set(data) - set(links)
    if unknown:
        raise LinkError(f"{path}: unknown keys {sorted(unknown)}")
    return links


def apply_links(text: str, links: dict[str, str]) -> str:
    """`text` (rules.yml or rules_test.yml) with every runbook_url and dashboard_url on the bases
    of `links`, whatever base they had."""
    text = RUNBOOK_LINE.sub(lambda m: m["head"] + m["q"] + links["runbook_base"] + m["rest"] + m["q"],
                            text)
    return DASHBOARD_LINE.sub(lambda m: m["head"] + m["q"] + links["grafana_base"] + m["rest"] + m["q"],
                              text)


def link_problems(rules: dict, links: dict[str, str]) -> list[str]:
    """Alerts whose links are missing or not on the configured bases (a line the rewrite did not
    recognise, e.g. a value folded over two lines)."""
    problems = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            ann = rule.get("annotations", {})
            name = rule["alert"]
            if ann.get("runbook_url") != f"{links['runbook_base']}#{name.lower()}":
                problems.append(f"{name}: runbook_url must be {links['runbook_base']}#{name.lower()}"
                                f", got {ann.get('runbook_url')!r}")
            if not str(ann.get("dashboard_url", "")).startswith(links["grafana_base"] + "/d/"):
                problems.append(f"{name}: dashboard_url must start with {links['grafana_base']}/d/"
                                f", got {ann.get('dashboard_url')!r}")
    return problems


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as in rules.yml."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_text: str | None = None) -> str:
    """prometheusrule.yaml for the rules of `rules_text` (rules.yml as it is on disk by default)."""
    rules = yaml.safe_load(RULES.read_text() if rules_text is None else rules_text)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "corridor", "labels": {"app.kubernetes.io/component": "worker"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1_000_000,
                              default_flow_style=False, allow_unicode=True)


def generate(links: dict[str, str]) -> dict[Path, str]:
    """{file: its content as it must be}: rules.yml and rules_test.yml with the links applied,
    and prometheusrule.yaml rendered from that rules.yml. Raises LinkError if an alert's links
    are missing."""
    rules_text = apply_links(RULES.read_text(), links)
    problems = link_problems(yaml.safe_load(rules_text), links)
    if problems:
        raise LinkError("\n".join([f"{RULES}:"] + problems))
    return {RULES: rules_text, RULES_TEST: apply_links(RULES_TEST.read_text(), links),
            OUT: render(rules_text)}


def main(argv: list[str]) -> int:
    try:
        files = generate(load_links())
    except (LinkError, tomllib.TOMLDecodeError) as err:
        print(err, file=sys.stderr)
        return 1
    if "--check" in argv:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
        for p in stale:
            print(f"out of date: {p} (run python deploy/k8s/prometheusrule.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in files.items():
        if not p.is_file() or p.read_text() != text:
            p.write_text(text)
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
