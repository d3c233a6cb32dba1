"""Writes the generated ConfigMaps of deploy/k8s from their single sources:

- sla-policy.yaml: streams/sla_policy.toml (the shipped SLA policy) as ConfigMap corridor-sla-policy,
  mounted by the workers at /etc/corridor/sla-policy.toml (CORRIDOR_SLA_POLICY). Replace it in an
  overlay with your own policy (configMapGenerator, behavior: replace; docs/deploy.md).
- grafana-dashboards.yaml: deploy/grafana/dashboards/*.json as ConfigMap corridor-grafana-dashboards,
  labelled grafana_dashboard: "1" for the Grafana sidecar (kube-prometheus-stack's default label).

    python deploy/k8s/configmaps.py            # regenerate (make dashboards runs it)
    python deploy/k8s/configmaps.py --check    # exit 1 if a file is out of date

tests/ops/test_deploy.py runs the check.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "streams" / "sla_policy.toml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
K8S = ROOT / "deploy" / "k8s"


class _Dumper(yaml.SafeDumper):
    """File contents as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _configmap(name: str, source: str, data: dict[str, str], labels: dict[str, str]) -> str:
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": data}
    return (f"# GENERATED from {source} by deploy/k8s/configmaps.py: do not edit.\n"
            + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True))


def render() -> dict[Path, str]:
    policy = _configmap("corridor-sla-policy", "streams/sla_policy.toml",
                        {"sla-policy.toml": POLICY.read_text()},
                        {"app.kubernetes.io/component": "worker"})
    boards = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    grafana = _configmap("corridor-grafana-dashboards", "deploy/grafana/dashboards/*.json", boards,
                         {"app.kubernetes.io/component": "dashboards", "grafana_dashboard": "1"})
    return {K8S / "sla-policy.yaml": policy, K8S / "grafana-dashboards.yaml": grafana}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in render().items():
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(map(str, stale))} (run python deploy/k8s/configmaps.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
