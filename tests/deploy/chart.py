"""Rendering the chart offline with the Helm engine, and reading what it rendered."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tmf-sqm"
VALUES = Path(__file__).resolve().parent / "values"
RELEASE = "sqm"
NAMESPACE = "tmf"

# Every values file the tests render; each stands for one way of deploying the suite.
SCENARIOS = ("defaults", "gateway-off-httproute", "hpa-ingress", "oda", "dev-mongodb")
API_NAMES = ("serviceInventory", "slaManagement", "alarmManagement", "serviceProblemManagement")


def load_values(scenario: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((VALUES / f"{scenario}.yaml").read_text())
    return values


@dataclass
class Rendered:
    """The manifests of one render, by kind and name."""

    values: dict[str, Any]
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert found, f"no {kind} named {name}; rendered: {[m['metadata']['name'] for m in self.of_kind(kind)]}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def deployment_serving(self, args_start: tuple[str, ...]) -> dict[str, Any]:
        """The Deployment whose container runs `sqm` with these first arguments."""
        for deployment in self.of_kind("Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            if tuple(container["args"][: len(args_start)]) == args_start:
                return deployment
        raise AssertionError(f"no Deployment runs sqm {' '.join(args_start)}")

    def config(self, name: str) -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap", name)["data"]
        return data


def render(values: dict[str, Any]) -> Rendered:
    """Render the chart as `helm template` does (schema checked first); NOTES.txt is left out."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    rendered = Rendered(values=values)
    for path, text in sorted(files.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        rendered.manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return rendered


@functools.cache
def render_scenario(scenario: str) -> Rendered:
    return render(load_values(scenario))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels
