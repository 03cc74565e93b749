"""`rhythm up|down|status`: the local stack in the background, logs in one place.

Parts, in start order: Kafka (rhythm.stack.kafka; one already started by `rhythm kafka up` from
`<home>/kafka`, one node or a cluster, is adopted), the processor worker (the live lane), the
history lane's worker (`history`: `rhythm backfill` and too-late events), the sink (which owns
the embedded ClickHouse and serves its HTTP endpoint), and Prometheus when the `prometheus`
binary is installed (rhythm.stack.prometheus: scrapes the parts' actual ports, data in
`<home>/prometheus`). `up` starts one detached supervisor process
(rhythm.stack.supervisor.supervise, log `<home>/logs/supervisor.log`) that starts the parts,
each as its own process group with its log in `<home>/logs/<part>.log`, and restarts them when
they exit or their /healthz keeps failing. `<home>/stack.json` (written by the supervisor) holds
every part's pid, restarts, last exit and crash-loop flag, so `up` is idempotent, `status` shows
them and `down` stops exactly what `up` started: the supervisor first, then the parts, then
Kafka unless it was adopted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.runtime.offsets import group_lag
from rhythm.runtime.process import alive, stop_group
from rhythm.runtime.scrape import scrape, scrape_min
from rhythm.schemas.topics import (
    EVENTS_TOPIC,
    HISTORY_GROUP,
    HISTORY_LANE,
    HISTORY_LATER_GROUP,
    HISTORY_LATER_TOPIC,
    HISTORY_TOPIC,
    HISTORY_UPDATES_TOPIC,
    PROCESSORS_GROUP,
    SINK_GROUP,
    SINK_TOPICS,
    UPDATES_TOPIC,
)
from rhythm.sinks.settings import default_data_dir
from rhythm.stack import prometheus
from rhythm.stack.kafka import LocalKafkaSettings, open_local_kafka
from rhythm.stack.ports import port_open
from rhythm.stack.supervisor.collector_part import collector_part, collector_status


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RHYTHM_STACK_", extra="ignore")

    home: Path = Field(
        default_factory=default_data_dir,
        description="Logs, pids and every part's data (<repo>/.rhythm in a checkout).",
    )
    sink_http_port: int = Field(8123, description="The embedded store's ClickHouse HTTP port.")
    processor_metrics_port: int = 9465
    history_metrics_port: int = Field(
        9469, description="The history lane's worker: /metrics (its progress), /healthz."
    )
    sink_metrics_port: int = 9464
    notifier_metrics_port: int = Field(
        9467, description="The notifier's /metrics and /healthz (started when a channel is set)."
    )
    collector_port: int = Field(
        8088, ge=0, description="The HTTP collector (docs/collector.md); 0 = do not start it."
    )
    prometheus_port: int = Field(
        9090, ge=0, description="The local Prometheus (when installed); 0 = do not start it."
    )
    start_timeout_s: float = 90.0
    supervisor_metrics_port: int = Field(
        9466, ge=0, description="The supervisor's /metrics (restarts, crash loops); 0 = none."
    )
    restart_backoff_s: float = Field(1.0, gt=0, description="First delay before a restart.")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="The doubling delay's cap.")
    crash_loop_restarts: int = Field(
        5, ge=1, description="This many exits within crash_loop_window_s is a crash loop."
    )
    crash_loop_window_s: float = Field(300.0, gt=0)
    health_grace_s: float = Field(
        60.0, gt=0, description="A part whose /healthz fails this long is restarted."
    )
    health_interval_s: float = Field(5.0, gt=0, description="How often /healthz is asked.")
    tick_s: float = Field(0.5, gt=0, description="How often the supervisor looks at the parts.")
    later_interval_s: float = Field(
        60.0,
        ge=0,
        description="How often history that waits on rhythm.history.later (windows the live "
        "lane could still change when it was imported) is imported once the live lane is done "
        "with it (`rhythm backfill --later`, log `logs/later.log`); 0 = never.",
    )


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_port: int | None  # the part is up when this port opens
    health_url: str | None = None  # its /healthz, watched by the supervisor


class Stack:
    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.home = self.settings.home.resolve()
        self.logs = self.home / "logs"
        self.state_file = self.home / "stack.json"
        self.kafka = open_local_kafka(LocalKafkaSettings(home=self.home / "kafka"))

    # -- up / down -------------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start the supervisor (unless it runs) and wait until every part is ready, or is
        in a crash loop (then RuntimeError: the supervisor keeps retrying it)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        pid = self._state().get("supervisor", {}).get("pid")
        proc = None
        if not (pid and alive(pid)):
            with (self.logs / "supervisor.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "rhythm.stack.supervisor.supervise"],
                    env=self._supervisor_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=Path.cwd(),
                )
            pid = proc.pid
        self._wait_up(pid, proc)
        return self.status()

    def down(self, timeout: float = 30.0) -> None:
        pid = self._state().get("supervisor", {}).get("pid")
        if pid and alive(pid):  # first, so that nothing is restarted while stopping
            stop_group(pid, timeout)
        state = self._state()  # as the supervisor left it
        # the sink last in, first out: it commits on TERM
        for name in (
            "prometheus",
            "collector",
            "mail",
            "notifier",
            "sink",
            "history",
            "processors",
        ):
            pid = state.get(name, {}).get("pid")
            if pid and alive(pid):
                stop_group(pid, timeout)
            state.pop(name, None)
        adopted = bool(state.get("kafka", {}).get("adopted"))
        state.pop("supervisor", None)
        self._save(state)
        if not adopted:  # a Kafka started by `rhythm kafka up` stays for `rhythm kafka down`
            self.kafka.down()

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        from rhythm.stack.supervisor.supervise import probe_health

        state = self._state()
        kafka = self.kafka.status()
        sup = state.get("supervisor", {})
        sup_pid = sup.get("pid")
        sup_port = sup.get("metrics_port")
        parts: dict[str, Any] = {
            "supervisor": {
                "running": bool(sup_pid and alive(sup_pid)),
                "pid": sup_pid,
                "log": str(self.logs / "supervisor.log"),
                "metrics": f"http://127.0.0.1:{sup_port}/metrics" if sup_port else None,
            },
            "kafka": {"running": kafka.get("running", False), **kafka},
        }
        for name in ("processors", "history", "sink"):
            pid = state.get(name, {}).get("pid")
            parts[name] = {"running": bool(pid and alive(pid)), "pid": pid}
            parts[name]["log"] = state.get(name, {}).get("log")
        health = {
            "processors": self.settings.processor_metrics_port,
            "history": self.settings.history_metrics_port,
            "sink": self.settings.sink_metrics_port,
        }
        for name, port in health.items():
            if port and parts[name]["running"]:  # what /healthz says now, not what it said
                ok, detail = probe_health(f"http://127.0.0.1:{port}/healthz")
                parts[name]["health"] = {"ok": bool(ok), "detail": detail}
        if parts["kafka"]["running"]:
            conn = KafkaSettings(bootstrap_servers=self.kafka.bootstrap)
            parts["processors"]["lag"] = group_lag(
                conn, PROCESSORS_GROUP, [EVENTS_TOPIC, UPDATES_TOPIC]
            )
            parts["history"]["lag"] = group_lag(
                conn, HISTORY_GROUP, [HISTORY_TOPIC, HISTORY_UPDATES_TOPIC]
            )
            # history an import left for when the live lane is done with its windows
            later = group_lag(conn, HISTORY_LATER_GROUP, [HISTORY_LATER_TOPIC])
            parts["history"]["later_waiting"] = later.get(HISTORY_LATER_TOPIC, 0)
            parts["sink"]["lag"] = group_lag(conn, SINK_GROUP, list(SINK_TOPICS))
        if self.notifier_wanted() or "notifier" in state:
            pid = state.get("notifier", {}).get("pid")
            port = self.settings.notifier_metrics_port
            running = bool(pid and alive(pid))
            parts["notifier"] = {"running": running, "pid": pid}
            parts["notifier"]["log"] = state.get("notifier", {}).get("log")
            if port and running:
                ok, detail = probe_health(f"http://127.0.0.1:{port}/healthz")
                parts["notifier"]["health"] = {"ok": bool(ok), "detail": detail}
        if self.mail_wanted() or "mail" in state:
            pid = state.get("mail", {}).get("pid")
            parts["mail"] = {"running": bool(pid and alive(pid)), "pid": pid}
            parts["mail"]["log"] = state.get("mail", {}).get("log")
        parts.update(collector_status(state, self.settings.collector_port))
        if self._prometheus_wanted() or "prometheus" in state:
            pid = state.get("prometheus", {}).get("pid")
            port = self.settings.prometheus_port
            parts["prometheus"] = {
                "running": bool(pid and alive(pid)),
                "pid": pid,
                "log": state.get("prometheus", {}).get("log"),
                "url": f"http://127.0.0.1:{port}" if port_open("127.0.0.1", port) else None,
            }
        for name, port in (
            ("processors", self.settings.processor_metrics_port),
            ("history", self.settings.history_metrics_port),
        ):  # each lane's own event time
            parts[name]["watermark"] = scrape_min(port, "rhythm_processor_stage2_watermark_seconds")
        routed = scrape(
            self.settings.processor_metrics_port, "rhythm_processor_routed_events_total"
        )
        if routed is not None:
            parts["processors"]["routed_events"] = int(sum(routed))
        port = self.settings.processor_metrics_port
        over = scrape(port, "rhythm_processor_tenants_over_budget")
        degraded = scrape(port, "rhythm_processor_degraded_events_total")
        if over is not None and degraded is not None:  # the budget (processors/budget.py)
            parts["processors"]["tenants_over_budget"] = int(sum(over))
            parts["processors"]["degraded_events"] = int(sum(degraded))
        parts["sink"]["http"] = (
            f"http://127.0.0.1:{self.settings.sink_http_port}"
            if port_open("127.0.0.1", self.settings.sink_http_port)
            else None
        )
        for name, part in parts.items():  # what the supervisor recorded
            recorded = state.get(name, {})
            for key in ("restarts", "last_exit", "crash_loop", "state", "adopted"):
                if key in recorded:
                    part[key] = recorded[key]
        return parts

    # -- internals -------------------------------------------------------------------------

    def _parts(self, bootstrap: str) -> list[Part]:
        s = self.settings
        env = dict(os.environ, RHYTHM_KAFKA_BOOTSTRAP_SERVERS=bootstrap, PYTHONUNBUFFERED="1")
        cli = [sys.executable, "-m", "rhythm.stack.cli"]
        return [
            Part(
                "processors",
                [*cli, "processors"],
                dict(
                    env,
                    RHYTHM_PROCESSOR_DATA_DIR=str(self.home / "processors"),
                    RHYTHM_PROCESSOR_METRICS_PORT=str(s.processor_metrics_port),
                ),
                s.processor_metrics_port or None,
                _healthz(s.processor_metrics_port),
            ),
            Part(
                "history",
                [*cli, "processors"],
                dict(
                    env,
                    RHYTHM_PROCESSOR_LANE=HISTORY_LANE,
                    RHYTHM_PROCESSOR_DATA_DIR=str(self.home / "history"),
                    RHYTHM_PROCESSOR_METRICS_PORT=str(s.history_metrics_port),
                    # the live lane's watermark: which windows it is done with
                    RHYTHM_PROCESSOR_LIVE_METRICS_PORT=str(s.processor_metrics_port),
                    # routed events are computed with the stored events of their windows
                    # (none without the sink's endpoint)
                    RHYTHM_PROCESSOR_STORE_URL=env.get(
                        "RHYTHM_PROCESSOR_STORE_URL",
                        f"http://127.0.0.1:{s.sink_http_port}" if s.sink_http_port else "",
                    ),
                ),
                s.history_metrics_port or None,
                _healthz(s.history_metrics_port),
            ),
            Part(
                "sink",
                [*cli, "sink"],
                dict(
                    env,
                    RHYTHM_SINK_DATA_DIR=str(self.home),
                    RHYTHM_SINK_HTTP_PORT=str(s.sink_http_port),
                    RHYTHM_SINK_METRICS_PORT=str(s.sink_metrics_port),
                ),
                s.sink_http_port or None,
                _healthz(s.sink_metrics_port),
            ),
            *self._notifier_part(env, cli),
            *self._mail_part(env, cli),
            *collector_part(self.home, s.collector_port, env, cli),
            *self._prometheus_part(),
        ]

    def notifier_wanted(self) -> bool:
        """The notifier runs when a delivery channel is configured (RHYTHM_NOTIFIER_*)."""
        return any(
            os.environ.get(f"RHYTHM_NOTIFIER_{name}")
            for name in ("WEBHOOK_URL", "SLACK_WEBHOOK_URL", "SMTP_HOST")
        )

    def _notifier_part(self, env: dict[str, str], cli: list[str]) -> list[Part]:
        if not self.notifier_wanted():
            return []
        port = self.settings.notifier_metrics_port
        notifier_env = dict(
            env,
            RHYTHM_NOTIFIER_DATA_DIR=str(self.home / "notifier"),
            RHYTHM_NOTIFIER_METRICS_PORT=str(port),
            RHYTHM_NOTIFIER_CLICKHOUSE_URL=env.get(
                "RHYTHM_NOTIFIER_CLICKHOUSE_URL", f"http://127.0.0.1:{self.settings.sink_http_port}"
            ),
        )
        return [Part("notifier", [*cli, "notifier"], notifier_env, port or None, _healthz(port))]

    def mail_wanted(self) -> bool:
        """The mail connector runs when an IMAP account is configured (RHYTHM_MAIL_*)."""
        return bool(os.environ.get("RHYTHM_MAIL_IMAP_HOST"))

    def _mail_part(self, env: dict[str, str], cli: list[str]) -> list[Part]:
        """`rhythm connect imap` (docs/mail.md), watched on its /healthz like the others."""
        if not self.mail_wanted():
            return []
        mail_env = dict(env)
        mail_env.setdefault("RHYTHM_MAIL_STATE_DIR", str(self.home / "mail-connector"))
        port = self._mail_metrics_port(mail_env)
        argv = [*cli, "connect", "imap"]
        return [Part("mail", argv, mail_env, port or None, _healthz(port))]

    @staticmethod
    def _mail_metrics_port(env: Mapping[str, str]) -> int:
        return int(env.get("RHYTHM_MAIL_METRICS_PORT", "9470"))

    def _prometheus_wanted(self) -> bool:
        return bool(self.settings.prometheus_port) and prometheus.binary() is not None

    def _prometheus_part(self) -> list[Part]:
        """Prometheus with a config for this stack's ports and the project's alert rules."""
        s = self.settings
        executable = prometheus.binary()
        if not s.prometheus_port or executable is None:
            return []
        home = self.home / "prometheus"
        ports = (s.processor_metrics_port, s.sink_metrics_port)
        sup = s.supervisor_metrics_port
        workers = (s.processor_metrics_port, s.history_metrics_port)
        mail_port = self._mail_metrics_port(os.environ)
        config = prometheus.write_config(
            home,
            prometheus.render_config(
                processors=[f"127.0.0.1:{port}" for port in workers if port],
                sinks=[f"127.0.0.1:{ports[1]}"] if ports[1] else [],
                supervisors=(f"127.0.0.1:{sup}",) if sup else (),
                notifiers=(
                    (f"127.0.0.1:{s.notifier_metrics_port}",)
                    if s.notifier_metrics_port and self.notifier_wanted()
                    else ()
                ),
                collectors=(f"127.0.0.1:{s.collector_port}",) if s.collector_port else (),
                mail=(f"127.0.0.1:{mail_port}",) if mail_port and self.mail_wanted() else (),
                prometheus=f"127.0.0.1:{s.prometheus_port}",
            ),
            prometheus.rules_text(),
        )
        argv = prometheus.command(executable, config, home / "data", s.prometheus_port)
        return [Part("prometheus", argv, dict(os.environ), s.prometheus_port)]

    def _supervisor_env(self) -> dict[str, str]:
        """The environment plus this object's settings, which the supervisor reads back."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in self.settings.model_dump().items():
            env[f"RHYTHM_STACK_{key.upper()}"] = str(value)
        return env

    def _wait_up(self, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        """Until the supervisor reports Kafka and every part ready; RuntimeError when it
        exits, a part is in a crash loop, or the time is up."""
        log = self.logs / "supervisor.log"
        timeout = self.settings.start_timeout_s + self.kafka.settings.start_timeout_s
        deadline = time.monotonic() + timeout
        names = ["kafka", "processors", "history", "sink"]
        if self.notifier_wanted():
            names.append("notifier")
        if self._prometheus_wanted():
            names.append("prometheus")
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not alive(pid):
                raise RuntimeError(f"the supervisor exited:\n{_tail(log)}")
            state = self._state()
            if state.get("supervisor", {}).get("pid") == pid:
                looping = [n for n in names if state.get(n, {}).get("crash_loop")]
                if looping:
                    reasons = "; ".join(
                        f"{n}: {(state[n].get('last_exit') or {}).get('reason')}, "
                        f"{state[n].get('restarts')} restarts (log {state[n].get('log')})"
                        for n in looping
                    )
                    raise RuntimeError(
                        f"crash loop: {reasons}\n{_tail(Path(state[looping[0]]['log']))}\n"
                        "The supervisor keeps restarting it with backoff; see `rhythm status`, "
                        "fix the cause or `rhythm down`."
                    )
                if all(state.get(n, {}).get("ready") for n in names):
                    return
            time.sleep(0.2)
        raise RuntimeError(
            f"the stack is not ready after {timeout:.0f}s; see `rhythm status` and {self.logs}"
        )

    def _state(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
            return loaded
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)


def _healthz(port: int) -> str | None:
    return f"http://127.0.0.1:{port}/healthz" if port else None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
