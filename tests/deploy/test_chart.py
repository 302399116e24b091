"""The Helm chart, rendered offline by the Helm engine for each deployment scenario, linted, checked
against the Kubernetes schemas of two releases, and held to the invariants the suite relies on."""

from __future__ import annotations

import copy
import tomllib
from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from console.settings import ConsoleSettings
from tests.deploy.chart import (
    API_NAMES,
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    Rendered,
    load_values,
    pod_labels,
    render,
    render_scenario,
    selects,
)
from tests.deploy.crd_schemas import CRD_SCHEMAS

# The oldest and the newest Kubernetes release of the three the project supports.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")


def _tier(workload: dict[str, Any]) -> str:
    return pod_labels(workload)["tmf-sqm/tier"]


# ---------------------------------------------------------------------------------------------
# Lint and schemas


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART, load_values(scenario), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBERNETES_VERSIONS[0]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    # The only note strict lint may leave is the recommendation of an icon (severity 1, info).
    assert problems == [], problems
    assert report["errors"] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(scenario: str, version: str) -> None:
    rendered = render_scenario(scenario)
    checked = 0
    for manifest in rendered.manifests:
        if manifest["kind"] in CRD_SCHEMAS:
            continue  # custom resources: structural checks below
        # Strict: an unknown or misplaced field is an error, not silently dropped by the server.
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked >= 10


def test_the_kubernetes_validator_refuses_a_misplaced_field() -> None:
    deployment = copy.deepcopy(render_scenario("defaults").of_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[1], strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources_have_the_structure_their_definitions_require(scenario: str) -> None:
    # HTTPRoute, ServiceMonitor and the ODA Component are not in the core Kubernetes schemas;
    # tests/deploy/crd_schemas.py restates the parts of their definitions the chart uses.
    rendered = render_scenario(scenario)
    for manifest in rendered.manifests:
        schema = CRD_SCHEMAS.get(manifest["kind"])
        if schema is not None:
            jsonschema.validate(manifest, schema)


# ---------------------------------------------------------------------------------------------
# What every workload has


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_workload_has_probes_resources_and_runs_as_non_root(scenario: str) -> None:
    rendered = render_scenario(scenario)
    assert rendered.workloads()
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            assert container["livenessProbe"] and container["readinessProbe"], name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["limits"]["memory"], name
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_suite_processes_probe_the_split_health_endpoints(scenario: str) -> None:
    for deployment in render_scenario(scenario).of_kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["sqm"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert "--port" in container["args"]
        assert container["args"][container["args"].index("--port") + 1] == "8080"


def test_one_deployment_per_api_and_one_for_the_gateway() -> None:
    rendered = render_scenario("defaults")
    for api in API_NAMES:
        assert rendered.deployment_serving(("serve", "--api", api))
    assert rendered.deployment_serving(("gateway",))
    assert len(rendered.of_kind("Deployment")) == len(API_NAMES) + 1
    spread = rendered.of_kind("Deployment")[0]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_a_disabled_api_gets_no_objects() -> None:
    values = load_values("defaults")
    values["apis"] = {"alarmManagement": {"enabled": False}}
    rendered = render(values)
    names = {m["metadata"]["name"] for m in rendered.manifests}
    assert not any("alarm-management" in name for name in names)
    upstreams = rendered.config("sqm-tmf-sqm-gateway")["SQM_GATEWAY_UPSTREAMS"]
    assert "alarmManagement=" not in upstreams
    assert "SQM_ALARM_HUB_URL" not in rendered.config("sqm-tmf-sqm")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_pdbs_and_hpas_select_their_own_workload(scenario: str) -> None:
    rendered = render_scenario(scenario)
    deployments = rendered.of_kind("Deployment")
    for service in rendered.of_kind("Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        chosen = [w for w in rendered.workloads() if selects(selector, pod_labels(w))]
        assert [w["metadata"]["name"] for w in chosen] == [service["metadata"]["name"]]
    for budget in rendered.of_kind("PodDisruptionBudget"):
        chosen = [d for d in deployments if selects(budget["spec"]["selector"], pod_labels(d))]
        assert [d["metadata"]["name"] for d in chosen] == [budget["metadata"]["name"]]
    for autoscaler in rendered.of_kind("HorizontalPodAutoscaler"):
        target = rendered.get("Deployment", autoscaler["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "an autoscaled Deployment must leave replicas to the HPA"


def test_per_api_values_override_the_defaults_including_false() -> None:
    rendered = render_scenario("hpa-ingress")
    autoscaled = {h["spec"]["scaleTargetRef"]["name"]: h for h in rendered.of_kind("HorizontalPodAutoscaler")}
    assert "sqm-tmf-sqm-alarm-management" not in autoscaled
    assert rendered.get("Deployment", "sqm-tmf-sqm-alarm-management")["spec"]["replicas"] == 3
    assert rendered.find("PodDisruptionBudget", "sqm-tmf-sqm-alarm-management") is None
    inventory = autoscaled["sqm-tmf-sqm-service-inventory"]["spec"]
    assert (inventory["minReplicas"], inventory["maxReplicas"]) == (2, 20)
    container = rendered.get("Deployment", "sqm-tmf-sqm-service-inventory")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    assert len(autoscaled) == len(API_NAMES)  # three APIs and the gateway


# ---------------------------------------------------------------------------------------------
# Wiring: the gateway's upstreams and the URLs between services reach real Services


def _service_port_of(rendered: Rendered, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    service = rendered.find("Service", parts.hostname or "")
    assert service is not None, f"{url} names no rendered Service"
    ports = [p for p in service["spec"]["ports"] if p["port"] == parts.port]
    assert ports, f"{url}: Service {parts.hostname} has no port {parts.port}"
    return service


@pytest.mark.parametrize("scenario", ["defaults", "hpa-ingress", "oda", "dev-mongodb"])
def test_every_gateway_upstream_resolves_to_the_service_of_that_api(scenario: str) -> None:
    rendered = render_scenario(scenario)
    gateway = rendered.deployment_serving(("gateway",))
    env_from = [e["configMapRef"]["name"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
    upstreams = dict(pair.split("=", 1) for pair in rendered.config(env_from[1])["SQM_GATEWAY_UPSTREAMS"].split(","))
    assert sorted(upstreams) == sorted(API_NAMES)
    for api, url in upstreams.items():
        service = _service_port_of(rendered, url)
        serving = rendered.deployment_serving(("serve", "--api", api))
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(serving)), api
        assert urlsplit(url).path == ""


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_urls_between_services_resolve_to_rendered_services(scenario: str) -> None:
    rendered = render_scenario(scenario)
    config = rendered.config("sqm-tmf-sqm")
    expected_path = {"SQM_INVENTORY_URL": "serviceInventory", "SQM_SLA_URL": "slaManagement",
                     "SQM_SLA_HUB_URL": "slaManagement", "SQM_ALARM_HUB_URL": "alarmManagement"}
    for variable, api in expected_path.items():
        url = config[variable]
        assert urlsplit(url).path == f"/tmf-api/{api}/v4", variable
        service = _service_port_of(rendered, url)
        tier = service["metadata"]["labels"]["tmf-sqm/tier"]
        # Through the suite's gateway when it runs, straight to the API otherwise.
        assert tier == ("gateway" if rendered.find("Deployment", "sqm-tmf-sqm-gateway") else "api"), variable
    for url in config["SQM_INTERNAL_URLS"].split(","):
        _service_port_of(rendered, url)


@pytest.mark.parametrize("scenario", ["hpa-ingress", "gateway-off-httproute"])
def test_ingress_and_routes_point_at_rendered_services(scenario: str) -> None:
    rendered = render_scenario(scenario)
    backends: list[tuple[str, str | int]] = []
    for ingress in rendered.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            backends += [(p["backend"]["service"]["name"], p["backend"]["service"]["port"]["name"])
                         for p in rule["http"]["paths"]]
    for route in rendered.of_kind("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            backends += [(b["name"], b["port"]) for b in rule["backendRefs"]]
    assert backends
    for name, port in backends:
        service = rendered.get("Service", name)
        assert any(port in (p["name"], p["port"]) for p in service["spec"]["ports"]), (name, port)


def test_without_the_gateway_the_routes_send_each_base_path_to_its_api() -> None:
    rendered = render_scenario("gateway-off-httproute")
    assert rendered.find("Deployment", "sqm-tmf-sqm-gateway") is None
    (route,) = rendered.of_kind("HTTPRoute")
    routed = {r["matches"][0]["path"]["value"]: r["backendRefs"][0]["name"] for r in route["spec"]["rules"]}
    for api in API_NAMES:
        serving = rendered.deployment_serving(("serve", "--api", api))
        assert routed[f"/tmf-api/{api}/v4"] == serving["metadata"]["name"]
    config = rendered.config("sqm-tmf-sqm")
    assert config["SQM_OAUTH_ISSUER"] == "https://login.example.com/realms/operator"
    assert config["SQM_PUBLIC_URL"] == "https://sqm.example.com"


def test_the_public_url_follows_the_ingress_host_and_tls() -> None:
    rendered = render_scenario("hpa-ingress")
    assert rendered.config("sqm-tmf-sqm")["SQM_PUBLIC_URL"] == "https://sqm.example.com"
    (ingress,) = rendered.of_kind("Ingress")
    assert [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]] == ["/"]


# ---------------------------------------------------------------------------------------------
# NetworkPolicy


def _admitted(rendered: Rendered, policy: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    """The release's workloads a policy admits, and the peers outside the release it admits."""
    workloads: set[str] = set()
    outside: list[dict[str, Any]] = []
    for rule in policy["spec"].get("ingress", []):
        assert "from" in rule, f"{policy['metadata']['name']} admits anyone"
        for peer in rule["from"]:
            if set(peer) == {"podSelector"}:
                workloads |= {w["metadata"]["name"] for w in rendered.workloads()
                              if selects(peer["podSelector"], pod_labels(w))}
            else:
                outside.append(peer)
    return workloads, outside


def _api_policy(rendered: Rendered) -> dict[str, Any]:
    (policy,) = [p for p in rendered.of_kind("NetworkPolicy")
                 if p["spec"]["podSelector"]["matchLabels"].get("tmf-sqm/tier") == "api"]
    protected = {w["metadata"]["name"] for w in rendered.workloads()
                 if selects(policy["spec"]["podSelector"], pod_labels(w))}
    assert protected == {w["metadata"]["name"] for w in rendered.workloads() if _tier(w) == "api"}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    return policy


@pytest.mark.parametrize("scenario", ["defaults", "oda", "dev-mongodb"])
def test_only_the_gateway_reaches_the_api_pods(scenario: str) -> None:
    rendered = render_scenario(scenario)
    workloads, outside = _admitted(rendered, _api_policy(rendered))
    assert workloads == {"sqm-tmf-sqm-gateway"}
    assert outside == []


def test_prometheus_is_admitted_only_when_it_scrapes() -> None:
    rendered = render_scenario("hpa-ingress")
    workloads, outside = _admitted(rendered, _api_policy(rendered))
    assert workloads == {"sqm-tmf-sqm-gateway"}
    assert outside == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_without_the_gateway_the_cluster_gateway_and_the_apis_reach_the_api_pods() -> None:
    rendered = render_scenario("gateway-off-httproute")
    workloads, outside = _admitted(rendered, _api_policy(rendered))
    assert workloads == {w["metadata"]["name"] for w in rendered.of_kind("Deployment")}
    assert outside == load_values("gateway-off-httproute")["networkPolicy"]["externalGatewayFrom"]


def test_api_pods_reach_mongodb_the_gateway_dns_and_public_addresses_only() -> None:
    rendered = render_scenario("dev-mongodb")
    egress = _api_policy(rendered)["spec"]["egress"]
    reached = set()
    for rule in egress:
        for peer in rule.get("to", []):
            if set(peer) == {"podSelector"}:
                reached |= {w["metadata"]["name"] for w in rendered.workloads()
                            if selects(peer["podSelector"], pod_labels(w))}
    assert reached == {"sqm-tmf-sqm-gateway", "sqm-tmf-sqm-mongodb"}
    public = [p["ipBlock"] for r in egress for p in r.get("to", []) if "ipBlock" in p]
    assert {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                            "169.254.0.0/16", "100.64.0.0/10"]} in public
    database = rendered.get("NetworkPolicy", "sqm-tmf-sqm-mongodb")
    workloads, outside = _admitted(rendered, database)
    assert workloads == {w["metadata"]["name"] for w in rendered.workloads()}
    assert outside == []


# ---------------------------------------------------------------------------------------------
# Secrets and MongoDB


def test_secrets_reach_the_pods_through_secret_refs_only() -> None:
    rendered = render_scenario("hpa-ingress")
    secret = rendered.get("Secret", "sqm-tmf-sqm")
    assert secret["stringData"] == {"mongodb-uri": "mongodb://mongo.data.svc:27017/?replicaSet=rs0",
                                    "oauth-client-secret": "s3cret"}
    for config in rendered.of_kind("ConfigMap"):
        assert "s3cret" not in yaml.safe_dump(config)
        assert not any("MONGODB_URI" in key or "SECRET" in key for key in config["data"])
    for deployment in rendered.of_kind("Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["SQM_MONGODB_URI"]["valueFrom"]["secretKeyRef"] == {"name": "sqm-tmf-sqm", "key": "mongodb-uri"}
        assert env["SQM_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "sqm-tmf-sqm"


def test_an_existing_secret_replaces_the_charts_and_an_api_may_have_its_own_client() -> None:
    rendered = render_scenario("gateway-off-httproute")
    assert rendered.of_kind("Secret") == []
    sla = rendered.deployment_serving(("serve", "--api", "slaManagement"))
    env = {e["name"]: e for e in sla["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SQM_CLIENT_ID"]["value"] == "tmf-sqm-sla"
    assert env["SQM_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "sqm-credentials", "key": "oauth-client-secret-sla-management", "optional": True}


def test_the_gateway_gets_the_consoles_settings_and_its_oidc_secret_by_reference() -> None:
    values = load_values("defaults")
    values["gateway"] = {"console": {"sessionSeconds": 3600, "oidc": {
        "issuer": "https://login.example.com/realms/sqm", "clientId": "sqm-console", "clientSecret": "c0nsole",
        "roleClaim": "realm_access.role"}}}
    rendered = render(values)
    config = rendered.get("ConfigMap", "sqm-tmf-sqm-gateway")["data"]
    documented = {name for name, _ in ConsoleSettings.documented()}
    assert {k for k in config if k.startswith("SQM_CONSOLE_")} == documented - {"SQM_CONSOLE_OIDC_CLIENT_SECRET"}
    assert config["SQM_CONSOLE_SESSION_SECONDS"] == "3600"
    assert config["SQM_CONSOLE_OIDC_ROLE_CLAIM"] == "realm_access.role"
    assert config["SQM_CONSOLE_OIDC_PARTY_CLAIM"] == "party_id"
    # By default the console reaches the APIs through the gateway's own Service ...
    assert config["SQM_CONSOLE_API_URL"] == "http://sqm-tmf-sqm-gateway:8080"
    policy = rendered.get("NetworkPolicy", "sqm-tmf-sqm-gateway")
    reached = {w["metadata"]["name"] for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
               if set(peer) == {"podSelector"} for w in rendered.workloads()
               if selects(peer["podSelector"], pod_labels(w))}
    assert "sqm-tmf-sqm-gateway" in reached
    # ... and its client secret is in the Secret, reaching the gateway alone by reference.
    assert rendered.get("Secret", "sqm-tmf-sqm")["stringData"]["console-oidc-client-secret"] == "c0nsole"
    for config_map in rendered.of_kind("ConfigMap"):
        assert "c0nsole" not in yaml.safe_dump(config_map)
    for deployment in rendered.of_kind("Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        if _tier(deployment) == "gateway":
            assert env["SQM_CONSOLE_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
                "name": "sqm-tmf-sqm", "key": "console-oidc-client-secret", "optional": True}
        else:
            assert "SQM_CONSOLE_OIDC_CLIENT_SECRET" not in env
    without = render_scenario("defaults").get("ConfigMap", "sqm-tmf-sqm-gateway")["data"]
    assert "SQM_CONSOLE_OIDC_ISSUER" not in without and without["SQM_CONSOLE_SESSION_SECONDS"] == "28800"


def test_the_schema_refuses_a_console_provider_without_a_client_id() -> None:
    values = load_values("defaults")
    values["gateway"] = {"console": {"oidc": {"issuer": "https://login.example.com"}}}
    assert "/gateway/console/oidc" in _refusal(values)
    values["gateway"] = {"console": {"sessionSeconds": 10}}
    assert "/gateway/console/sessionSeconds" in _refusal(values)


def test_the_development_mongodb_is_a_single_node_replica_set_the_suite_uses() -> None:
    rendered = render_scenario("dev-mongodb")
    (database,) = rendered.of_kind("StatefulSet")
    container = database["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("mongo:")
    script = container["args"][0]
    assert '--replSet "$REPLICA_SET"' in script and "rs.initiate" in script
    env = {e["name"]: e["value"] for e in container["env"]}
    headless = rendered.get("Service", database["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    member = f"{database['metadata']['name']}-0.{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:27017"
    assert env["MEMBER"] == member
    uri = rendered.get("Secret", "sqm-tmf-sqm")["stringData"]["mongodb-uri"]
    assert uri == f"mongodb://{member}/?replicaSet={env['REPLICA_SET']}"
    assert database["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"


def test_no_development_mongodb_unless_asked() -> None:
    for scenario in ("defaults", "hpa-ingress", "oda", "gateway-off-httproute"):
        assert render_scenario(scenario).of_kind("StatefulSet") == []


# ---------------------------------------------------------------------------------------------
# ODA Component


def test_the_oda_component_declares_the_four_tmf_apis() -> None:
    rendered = render_scenario("oda")
    (component,) = rendered.of_kind("Component")
    assert component["apiVersion"] == "oda.tmforum.org/v1"
    exposed = {api["path"]: api for api in component["spec"]["coreFunction"]["exposedAPIs"]}
    assert sorted(exposed) == sorted(f"/tmf-api/{api}/v4" for api in API_NAMES)
    tmf_numbers = {"serviceInventory": "TMF638", "slaManagement": "TMF623", "alarmManagement": "TMF642",
                   "serviceProblemManagement": "TMF656"}
    # TM Forum publishes a v4 document of each but TMF623, whose own document is the suite's.
    published = {"TMF638", "TMF642", "TMF656"}
    for api, number in tmf_numbers.items():
        declared = exposed[f"/tmf-api/{api}/v4"]
        assert declared["id"] == number
        serving = rendered.deployment_serving(("serve", "--api", api))
        assert declared["implementation"] == serving["metadata"]["name"]
        _service_port_of(rendered, f"http://{declared['implementation']}:{declared['port']}")
        assert f"https://canvas.example.com/tmf-api/{api}/v4/openapi.json" in declared["specification"]
        assert any(number in url for url in declared["specification"]) == (number in published), api
    metrics = component["spec"]["managementFunction"]["exposedAPIs"]
    assert {m["implementation"] for m in metrics} == {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    callbacks = {e["callback"] for e in component["spec"]["eventNotification"]["subscribedEvents"]}
    assert "/tmf-api/serviceProblemManagement/v4/listener/alarmCreateEvent" in callbacks


# ---------------------------------------------------------------------------------------------
# The values schema refuses bad values with a message that names them


def _refusal(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    return str(refused.value)


def test_the_schema_refuses_a_replica_count_in_words() -> None:
    values = load_values("defaults")
    values["apis"] = {"serviceInventory": {"replicas": "two"}}
    message = _refusal(values)
    assert "/apis/serviceInventory/replicas" in message and "want integer" in message
    values = load_values("defaults")
    values["defaults"] = {"replicas": "two"}
    assert "/defaults/replicas" in _refusal(values)


def test_the_schema_refuses_an_empty_mongodb_uri() -> None:
    message = _refusal({"mongodb": {"uri": ""}})
    assert "/mongodb/uri" in message
    # The chart's own defaults are not an install: they name no database either.
    assert "/mongodb/uri" in _refusal({})


def test_the_schema_refuses_a_uri_that_is_not_mongodb() -> None:
    assert "/mongodb/uri" in _refusal({"mongodb": {"uri": "postgres://db:5432/sqm"}})


def test_the_schema_refuses_unknown_keys_and_unsafe_security_settings() -> None:
    values = load_values("defaults")
    values["apis"] = {"serviceInventry": {"enabled": True}}
    assert "serviceInventry" in _refusal(values)
    values = load_values("defaults")
    values["securityContext"] = {"runAsNonRoot": True, "readOnlyRootFilesystem": False,
                                 "allowPrivilegeEscalation": False}
    assert "/securityContext/readOnlyRootFilesystem" in _refusal(values)


def test_the_schema_refuses_routes_and_policies_that_cannot_work() -> None:
    values = load_values("defaults")
    values["httpRoute"] = {"enabled": True}
    assert "/httpRoute/parentRefs" in _refusal(values)
    values = load_values("defaults")
    values["gateway"] = {"enabled": False}
    values["oauth"] = {"issuer": "https://login.example.com"}
    assert "/networkPolicy/externalGatewayFrom" in _refusal(values)


def test_an_existing_secret_or_the_development_database_stand_in_for_the_uri() -> None:
    assert render({"existingSecret": "mine"}).of_kind("Secret") == []
    assert render({"mongodb": {"dev": {"enabled": True}}}).of_kind("StatefulSet")


# ---------------------------------------------------------------------------------------------
# One version everywhere


def test_chart_image_and_package_versions_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert chart["appVersion"] == project
    assert f"ARG VERSION={project}" in dockerfile
    image = render_scenario("defaults").of_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"tmf-sqm:{project}"
