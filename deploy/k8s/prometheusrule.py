"""Writes deploy/k8s/prometheusrule.yaml: deploy/prometheus/rules.yml as a Prometheus Operator
PrometheusRule, so compose and Kubernetes evaluate the same rules.

    python deploy/k8s/prometheusrule.py            # regenerate after editing rules.yml
    python deploy/k8s/prometheusrule.py --check    # exit 1 if prometheusrule.yaml is out of date

tests/ops/test_deploy.py runs the check.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
OUT = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
HEADER = ("# GENERATED from deploy/prometheus/rules.yml by deploy/k8s/prometheusrule.py: do not edit.\n"
          "# Comments (thresholds, runbook) are in rules.yml and deploy/RUNBOOK.md.\n")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as in rules.yml."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    rules = yaml.safe_load(RULES.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "corridor", "labels": {"app.kubernetes.io/component": "worker"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1_000_000,
                              default_flow_style=False, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"out of date: {OUT} (run python deploy/k8s/prometheusrule.py)", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
