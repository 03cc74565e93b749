"""A local Prometheus (Debian's `prometheus` package) for `rhythm up` and the tests.

The scrape config is generated for the ports the parts actually listen on (the checked-in
deploy/prometheus/prometheus.yml names the defaults); the alert rules are this package's data,
rules.yml (their one source: deploy/ references it), copied beside the config. The config is
written as JSON, which is YAML too: no YAML library needed."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "binary",
    "command",
    "query",
    "render_config",
    "rules_text",
    "wait_ready",
    "write_config",
]


def binary() -> str | None:
    return shutil.which("prometheus")


def rules_text(for_override: str | None = None) -> str:
    """The project's rules; `for_override` replaces every `for:` (tests shorten them)."""
    text = resources.files(__name__).joinpath("rules.yml").read_text()
    if for_override is not None:
        text = re.sub(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{for_override}", text)
    return text


def render_config(
    *,
    processors: list[str],
    sinks: list[str],
    clients: tuple[str, ...] = (),
    supervisors: tuple[str, ...] = (),
    notifiers: tuple[str, ...] = (),
    collectors: tuple[str, ...] = (),
    mail: tuple[str, ...] = (),
    prometheus: str | None = None,
    rule_files: tuple[str, ...] = ("rules.yml",),
    scrape_interval: str = "15s",
    scrape_timeout: str = "10s",
    evaluation_interval: str = "15s",
) -> str:
    jobs: list[tuple[str, list[str]]] = [
        ("rhythm-processors", list(processors)),
        ("rhythm-sink", list(sinks)),
        ("rhythm-notifier", list(notifiers)),
        ("rhythm-collector", list(collectors)),
        ("rhythm-mail", list(mail)),
        ("rhythm-clients", list(clients)),
        ("rhythm-supervisor", list(supervisors)),
        ("prometheus", [prometheus] if prometheus else []),
    ]
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_timeout,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs
            if targets
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def write_config(directory: Path, config: str, rules: str) -> Path:
    """prometheus.yml and rules.yml in `directory`; returns the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yml").write_text(rules)
    path = directory / "prometheus.yml"
    path.write_text(config)
    return path


def command(executable: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        executable,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=15d",
        "--log.level=warn",
    ]


def wait_ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def query(port: int, path: str, **params: str) -> dict[str, Any]:
    """GET an HTTP API path (e.g. ``/api/v1/query``, query=EXPR); the decoded answer, errors
    included (Prometheus answers 400/422 with a JSON body saying why)."""
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            answer: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read() or b"{}")
    return answer
