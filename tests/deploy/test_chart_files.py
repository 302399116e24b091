"""The Dockerfile (linted, and the facts the chart relies on), .dockerignore, and the chart's
README values table kept in step with values.schema.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.chart import CHART, ROOT
from tests.deploy.values_table import README, with_table

HADOLINT = Path(sys.executable).parent / "hadolint"


def _stages(dockerfile: str) -> list[list[str]]:
    """The instructions of each build stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    # A generous safety timeout: the linter answers in well under a second.
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_dockerfile_passes_the_linter() -> None:
    result = _lint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_does_report_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD sqm serve\n")
    result = _lint(careless)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the latest tag


def test_the_final_stage_runs_sqm_as_a_non_root_user_without_compilers_or_the_embedded_database() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    final = stages[-1]
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS runtime$", final[0])
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid other than root, which runAsNonRoot can verify"
    assert any(line.startswith("HEALTHCHECK ") and "/health/ready" in line for line in final)
    assert 'ENTRYPOINT ["sqm"]' in final
    assert any(line.startswith("COPY --from=builder /opt/sqm /opt/sqm") for line in final)
    assert "EXPOSE 8080" in final
    final_text = "\n".join(final).lower()
    for unwanted in ("build-essential", "gcc", "apt-get install", "pip install", "pytest", "[test"):
        assert unwanted not in final_text, unwanted
    installs = [args for stage in stages for line in stage for args in re.findall(r"pip install ([^&;]*)", line)]
    assert installs
    for args in installs:
        # No extra ([embedded] would bring the development database, [test] the test tools).
        assert "[" not in args and "secantus" not in args.lower(), args
    # The dependency layer installs the project's runtime dependencies, not its optional ones.
    assert "['project']['dependencies']" in dockerfile and "optional-dependencies" not in dockerfile


def test_the_image_carries_oci_labels_with_the_version() -> None:
    final = "\n".join(_stages((ROOT / "Dockerfile").read_text())[-1])
    for label in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{label}=" in final, label
    assert 'org.opencontainers.image.version="${VERSION}"' in final


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "everything is left out unless named"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    # The distribution's top-level packages (what `pip install .` builds from), and its metadata.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert included == {"pyproject.toml", "README.md", *(p.split(".")[0] for p in packages)}
    copied = set()
    for stage in _stages((ROOT / "Dockerfile").read_text()):
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                copied |= {source.rstrip("/").removeprefix("./") for source in line.split()[1:-1]}
    assert copied == included, "every file the Dockerfile copies is in the build context, and nothing else"


def test_the_chart_readme_values_table_matches_the_schema() -> None:
    current = README.read_text()
    assert current == with_table(current), "run `python -m tests.deploy.values_table` to update helm/tmf-sqm/README.md"


@pytest.mark.parametrize("dotted", ["mongodb.uri", "existingSecret", "apis.serviceInventory.enabled",
                                    "networkPolicy.externalGatewayFrom", "oda.enabled", "defaults.replicas"])
def test_the_values_table_lists_every_key(dotted: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    assert f"| `{dotted}` |" in README.read_text()
    assert node["description"] in README.read_text()
