"""A real Prometheus scrapes a real agent's /metrics over loopback and answers queries on them."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from helpers import stop_process

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: sabot-agents
    honor_labels: true   # the agents' own job/agent labels win over Prometheus' target labels
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def free_port() -> int:
    from sabot_agent.local import free_ports

    return free_ports(1)[0]


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (hack/ensure-prometheus.sh installs it from Debian)")
    started = []

    def start(target_port: int) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(SCRAPE_CONFIG.format(port=target_port))
        address = f"127.0.0.1:{free_port()}"
        log = open(tmp_path / "prometheus.log", "wb")
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={address}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return f"http://{address}"

    yield start
    for process in started:
        stop_process(process, grace=10)


def query(base: str, expression: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())["data"]["result"]
    except OSError:
        return []  # not listening yet


def test_prometheus_scrapes_agent_metrics(serve_agent, prometheus):
    agent = serve_agent("scraped", "--slots", "3")
    base = prometheus(agent.http_port)
    deadline = time.monotonic() + 30  # the first scrape lands a few seconds after Prometheus starts
    result = []
    while not result and time.monotonic() < deadline:
        result = query(base, "sabot_slots")
        time.sleep(0.5)  # polling Prometheus' query API
    assert result, "Prometheus never returned sabot_slots from the agent"
    (sample,) = result
    assert float(sample["value"][1]) == 3
    assert sample["metric"]["agent"] == "0"
    up = query(base, 'up{instance="127.0.0.1:%d"}' % agent.http_port)
    assert [float(s["value"][1]) for s in up] == [1.0]
