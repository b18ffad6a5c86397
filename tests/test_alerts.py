"""Alert rules and the dashboard: promtool checks and unit tests of the rules, the reference
shares generated from the training profile, and every PromQL expression of the Grafana dashboard
run against a real Prometheus scraping a real server (with the rules loaded and evaluated)."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time

import pytest

from mlproject.monitor.profile import ProfileError
from mlproject.ops import deploy
from mlproject.serve.process import ServerProcess

from conftest import ROOT, require_tool
from tooling import PrometheusProcess

PROM = ROOT / "deploy/prometheus"
DASHBOARD = ROOT / "deploy/grafana/dashboard.json"
# Grafana's variables, as Grafana would substitute them for a 1-second scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@pytest.fixture
def promtool():
    return require_tool("promtool", "Debian: apt-get install prometheus")


def test_rules_pass_promtool_check(promtool):
    out = subprocess.run(
        [promtool, "check", "rules", PROM / "rules.yml", PROM / "reference.rules.yml"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_pass_their_unit_tests(promtool):
    """rules.test.yml: every alert fires on the series that should raise it, and not otherwise."""
    out = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"], capture_output=True, text=True, cwd=PROM
    )
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = set(re.findall(r"alert: (\w+)", (PROM / "rules.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "rules.test.yml").read_text()))
    assert alerts and alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def test_a_broken_rule_fails_promtool(promtool, tmp_path):
    broken = (PROM / "rules.yml").read_text().replace("> 0.01", "> > 0.01", 1)
    (tmp_path / "rules.yml").write_text(broken)
    out = subprocess.run([promtool, "check", "rules", tmp_path / "rules.yml"], capture_output=True)
    assert out.returncode != 0


def test_reference_shares_are_generated_from_the_profile():
    profile = json.loads((ROOT / deploy.PROFILE).read_text())
    assert (ROOT / deploy.REFERENCE_RULES).read_text() == deploy.reference_rules(profile)
    # A profile missing what its task's rules need is named (a classifier's shares, a
    # regression model's quantiles), whichever task this project's model has.
    key = "shares" if "shares" in profile["predicted"] else "quantiles"
    del profile["predicted"][key]
    with pytest.raises(ProfileError, match=f"predicted.{key}"):
        deploy.reference_rules(profile)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries


def test_dashboard_covers_what_operators_watch():
    text = DASHBOARD.read_text()
    for metric in (
        "mlserve_requests_total",
        'status=~\\"5..\\"',
        "mlserve_request_duration_seconds_bucket",
        "mlserve_batch_size_bucket",
        "mlserve_predictions_total",
        "mlserve_prediction_log_dropped_total",
    ):
        assert metric in text, metric
    assert not [e for _, e in dashboard_queries() if "$" in e], "an unsubstituted variable"


def post_json(host: str, port: int, path: str, body: dict) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.slow
def test_dashboard_queries_and_rules_run_on_real_prometheus(pipeline_repo, tmp_path):
    model, card = pipeline_repo / "models/model.onnx", pipeline_repo / "models/model_card.json"
    name = json.loads(card.read_text())["name"]
    log = tmp_path / "predlog"
    with ServerProcess(model, card, cwd=pipeline_repo, env={"PREDICTION_LOG": str(log)}) as srv:
        rules = [PROM / "rules.yml", pipeline_repo / "deploy/prometheus/reference.rules.yml"]
        with PrometheusProcess(tmp_path, [f"{srv.host}:{srv.port}"], rules) as prom:
            assert prom.wait_for("up == 1"), "Prometheus never scraped the server"
            body = {
                "inputs": [
                    {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.1] * 128}
                ]
            }  # fmt: skip
            assert post_json(srv.host, srv.port, "/v2/models/nope/infer", body) == 404
            # Counters appear at their first increment: keep traffic going until Prometheus
            # has seen one grow, so rates over 1m have something to say.
            deadline, seen = time.monotonic() + 60, []
            while not seen and time.monotonic() < deadline:
                for _ in range(5):
                    assert post_json(srv.host, srv.port, f"/v2/models/{name}/infer", body) == 200
                seen = prom.wait_for("sum(increase(mlserve_predictions_total[1m])) > 0", 1.5)
            assert seen, "Prometheus never saw the prediction counter grow"
            failures, empty = [], []
            for title, expr in dashboard_queries():
                answer = prom.api("query", query=expr)
                if answer.get("status") != "success":
                    failures.append(f"{title}: {expr}: {answer.get('error')}")
                elif not answer["data"]["result"]:
                    empty.append(title)
            assert not failures, "\n".join(failures)
            # With traffic, these panels must show data (not only parse).
            for title in ("Requests per second, by route", "Predicted class shares (live) vs reference", "Served model"):  # fmt: skip
                assert title not in empty, f"{title}: no data"
            groups = prom.wait_for_rules()
    assert {r["name"] for g in groups for r in g["rules"]} >= {
        "MLServeHighErrorRatio",
        "mlserve:reference_class_share",
    }
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]  # fmt: skip
    assert not bad, bad
