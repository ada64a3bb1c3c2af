"""The monitoring that docker-compose provisions: Prometheus' alert rules pass `promtool check
rules` and their unit tests (`promtool test rules`: each rule fires on a synthetic series and stays
quiet on a healthy one), the Grafana dashboard's queries are valid PromQL over metrics that exist,
and the compose services mount what they need. promtool is Debian's (package prometheus)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import GatewayMetrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "pledgewatch.json"

# Metrics the rules and the dashboard use that another process is to export (README,
# "Monitoring"): the engine's lag and last pass, the notifier's deliveries, the broker's store.
PENDING = {"pledgewatch_engine_lag_seconds", "pledgewatch_engine_last_pass_timestamp_seconds",
           "pledgewatch_webhook_deliveries_total", "pledgewatch_broker_store_messages",
           "pledgewatch_rating_psi"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels, keywords, numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match[0] in KEYWORDS:
            continue
        names.add(match[0])
    return names


def code_metrics() -> set[str]:
    """What the product exports today (sample names: counters end in _total)."""
    registry = GatewayMetrics().registry
    return {s.name for family in registry.collect() for s in family.samples}


def rule_tests() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    return data


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def input_metrics() -> set[str]:
    return {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", s["series"])[0]  # type: ignore[index]
            for test in rule_tests()["tests"] for s in test["input_series"]}


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in panels if p["type"] != "row"]


def test_the_alert_rules_are_valid() -> None:
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    proc = promtool("test", "rules", "alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_rule_fires_in_a_test_and_stays_quiet_in_another() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in rule_tests()["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names == {"PledgewatchNoGateway", "PledgewatchGatewayDown", "PledgewatchGatewayStalled",
                     "PledgewatchGatewayDisconnected", "PledgewatchDeadLetterRate",
                     "PledgewatchBrokerQueueDeep", "PledgewatchBrokerQueueNearLimit",
                     "PledgewatchEngineLagging", "PledgewatchEngineStuck",
                     "PledgewatchWebhookDeliveriesFailed", "PledgewatchWebhooksRetrying",
                     "PledgewatchRatingDrift"}
    assert names <= fired, f"never seen firing: {names - fired}"
    assert names - {"PledgewatchNoGateway"} <= quiet, f"never seen quiet: {names - quiet}"
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_a_wrong_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    text = (PROMETHEUS / "alerts.yml").read_text()
    assert text.count("pledgewatch_gateway_stalled_seconds) > 60") == 1
    (tmp_path / "alerts.yml").write_text(
        text.replace("pledgewatch_gateway_stalled_seconds) > 60",
                     "pledgewatch_gateway_stalled_seconds) > 600"))
    proc = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "PledgewatchGatewayStalled" in proc.stdout + proc.stderr


def test_the_rules_read_metrics_that_exist_or_are_listed_as_pending() -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    known = code_metrics() | PENDING | {"up"}
    assert used <= known, f"unknown metrics in alerts.yml: {sorted(used - known)}"
    assert used | input_metrics() >= PENDING


def test_the_prometheus_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dashboard_queries_metrics_that_exist(tmp_path: Path) -> None:
    panels = dashboard_panels()
    assert len(panels) >= 10
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known = code_metrics() | input_metrics() | {"up"}
    exprs = []
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            unknown = metric_names(expr) - known
            assert not unknown, f"{panel['title']}: unknown metrics {sorted(unknown)} in {expr}"
            assert metric_names(expr), f"{panel['title']}: {expr} reads no metric"
            exprs.append(expr)
    # Valid PromQL: the same queries as recording rules through promtool's parser.
    rules_file = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules_file))
    proc = promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("expr", "names"),
    [('sum by (reason) (rate(pledgewatch_nosuch_total{reason="x y"}[5m])) > 0',
      {"pledgewatch_nosuch_total"}),
     ("time() - max(a_b:c) > 1e-9 and on (instance) up", {"a_b:c", "up"}),
     ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))", {"x_bucket"}),
     ('sum without (job) (y) / ignoring (z) group_left (w) q offset 5m', {"y", "q"})],
    ids=["labels-and-strings", "numbers-keywords", "grafana-interval", "modifiers"],
)
def test_the_metric_name_reader(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def service_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """target -> source of a compose service's bind mounts."""
    return {v["target"]: ROOT / v["source"] for v in service.get("volumes", [])
            if isinstance(v, dict) and v.get("type") == "bind"}


def test_compose_provisions_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]

    mounts = service_mounts(prometheus)
    assert mounts["/etc/prometheus"] == PROMETHEUS
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"{job['job_name']}: no service {name}"
                assert str(sd["port"]) in services[name].get("expose", []), job["job_name"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                assert host in services, target
                assert services[host]["environment"]["PLEDGEWATCH_HTTP_PORT"] == port

    mounts = service_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    assert mounts["/etc/grafana/dashboards"] == GRAFANA / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pledgewatch.yml"
                               ).read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
                             ).read_text())["datasources"][0]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
