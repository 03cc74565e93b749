"""The supervisor behind `rhythm up`: one small detached process that starts the stack's parts
and keeps them running.

It starts (or adopts) the local Kafka, then the processor worker, the sink and Prometheus, each
in its own process group with its log in `<home>/logs/<part>.log`. Every `tick_s` it checks them:

- a part that exited is started again after an exponential backoff (`restart_backoff_s`,
  doubling, at most `restart_backoff_max_s`; the streak starts over once a run lasted longer
  than `crash_loop_window_s`);
- a part whose `/healthz` fails (503, or no answer once started) for `health_grace_s` is
  stopped (TERM, then KILL) and started again like one that exited;
- a part that exited `crash_loop_restarts` times within `crash_loop_window_s` is in a crash
  loop: it is still restarted at the capped backoff, and says so in `rhythm status`, in the
  metrics and in its log line.

Per part it records the pid, restart count, last exit (code or signal, reason, time) and the
crash-loop flag in `<home>/stack.json` (what `rhythm status` reads) and serves them as metrics
on `supervisor_metrics_port` (`rhythm_stack_part_*`, scraped by the stack's Prometheus like the
other parts' ports). SIGTERM stops the supervisor alone; `rhythm down` then stops the parts.

Why not supervisord or a retry library: Kafka is restarted through LocalKafka/LocalKafkaCluster
(same home and ports, node by node, adopting one from `rhythm kafka up`), which a generic
process manager cannot do, and the backoff is one line in a poll loop that also reads
/healthz; liveness and process-group stop are rhythm.runtime.process's `alive`/`stop_group`.
Metrics go through prometheus_client on a port of the supervisor's own, the convention of the
other parts (each serves /metrics; the generated Prometheus config scrapes the ports), so no
textfile collector is needed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rhythm.runtime.process import alive, stop_group
from rhythm.stack.kafka import LocalKafka, LocalKafkaCluster, LocalKafkaError
from rhythm.stack.ports import port_open

if TYPE_CHECKING:
    from rhythm.stack.supervisor.control import Part, Stack

log = logging.getLogger("rhythm.stack.supervisor.supervise")


# -- the pure rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window_s: float = 300.0


def backoff_delay(policy: RestartPolicy, streak: int) -> float:
    """Seconds to wait before the next start after `streak` exits in a row (1: the first)."""
    if streak <= 0:
        return 0.0
    return float(min(policy.backoff_max_s, policy.backoff_s * 2.0 ** min(streak - 1, 60)))


def in_crash_loop(exits: Sequence[float], now: float, policy: RestartPolicy) -> bool:
    """At least `crash_loop_restarts` exits in the last `crash_loop_window_s` seconds."""
    recent = [t for t in exits if now - t <= policy.crash_loop_window_s]
    return len(recent) >= policy.crash_loop_restarts


def exit_reason(returncode: int | None) -> str:
    """A person's words for a Popen return code (negative: the signal that ended it)."""
    if returncode is None:
        return "exited (code unknown: not started by this supervisor)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


# -- bookkeeping per part -----------------------------------------------------------------------


@dataclass
class Record:
    name: str
    log: str | None = None
    pid: int | None = None
    state: str = "starting"  # starting | running | backoff
    ready: bool = False
    restarts: int = 0
    streak: int = 0
    started_mono: float = 0.0
    started_at: float | None = None
    next_start: float = 0.0
    exits: list[float] = field(default_factory=list)  # monotonic times, the window's only
    last_exit: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    unhealthy_since: float | None = None
    crash_loop: bool = False

    def exited(self, code: int | None, reason: str, policy: RestartPolicy, now: float) -> None:
        ran = now - self.started_mono if self.started_mono else 0.0
        self.streak = 1 if ran > policy.crash_loop_window_s else self.streak + 1
        self.exits = [t for t in self.exits if now - t <= policy.crash_loop_window_s] + [now]
        self.crash_loop = in_crash_loop(self.exits, now, policy)
        delay = backoff_delay(policy, self.streak)
        sig = -code if code is not None and code < 0 else None
        self.last_exit = {
            "code": code if code is not None and code >= 0 else None,
            "signal": signal.Signals(sig).name if sig in signal.valid_signals() else sig,
            "reason": reason,
            "at": time.time(),
            "ran_s": round(ran, 1),
        }
        self.pid, self.ready, self.state = None, False, "backoff"
        self.health, self.unhealthy_since = None, None
        self.next_start = now + delay
        level = logging.ERROR if self.crash_loop else logging.WARNING
        log.log(
            level,
            "%s %s after %.1f s; restart %d in %.1f s%s",
            self.name,
            reason,
            ran,
            self.restarts + 1,
            delay,
            f" (CRASH LOOP: {len(self.exits)} exits within {policy.crash_loop_window_s:.0f} s)"
            if self.crash_loop
            else "",
        )

    def started(self, pid: int | None, now: float, *, restart: bool) -> None:
        if restart:
            self.restarts += 1
        self.pid, self.state, self.ready = pid, "running", False
        self.started_mono, self.started_at = now, time.time()

    def refresh(self, policy: RestartPolicy, now: float) -> None:
        self.exits = [t for t in self.exits if now - t <= policy.crash_loop_window_s]
        self.crash_loop = in_crash_loop(self.exits, now, policy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "log": self.log,
            "state": self.state,
            "ready": self.ready,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "crash_loop": self.crash_loop,
            "exits_in_window": len(self.exits),
            "health": self.health,
        }


class _Metrics(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        records = list(self.supervisor.records.values())
        restarts = CounterMetricFamily(
            "rhythm_stack_part_restarts",
            "Times the supervisor started a part again (after an exit or failed /healthz).",
            labels=["part"],
        )
        loop = GaugeMetricFamily(
            "rhythm_stack_part_crash_loop",
            "1 while the part exited crash_loop_restarts times within crash_loop_window_s.",
            labels=["part"],
        )
        up = GaugeMetricFamily("rhythm_stack_part_up", "1 while the part runs.", labels=["part"])
        last = GaugeMetricFamily(
            "rhythm_stack_part_last_exit_timestamp_seconds",
            "When the part last exited (unix time; absent if never).",
            labels=["part", "reason"],
        )
        for r in records:
            restarts.add_metric([r.name], r.restarts)
            loop.add_metric([r.name], 1.0 if r.crash_loop else 0.0)
            up.add_metric([r.name], 1.0 if r.state == "running" else 0.0)
            if r.last_exit:
                last.add_metric([r.name, str(r.last_exit["reason"])[:120]], r.last_exit["at"])
        yield from (restarts, loop, up, last)


# -- the supervisor -------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        s = stack.settings
        self.policy = RestartPolicy(
            s.restart_backoff_s,
            s.restart_backoff_max_s,
            s.crash_loop_restarts,
            s.crash_loop_window_s,
        )
        self.kafka = stack.kafka
        self.kafka_adopted = False
        self.bootstrap: str | None = None
        self.parts: dict[str, Part] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.records: dict[str, Record] = {"kafka": Record("kafka", log=str(self.kafka.log_file))}
        self.stopping = False
        self._last_health: dict[str, float] = {}
        self._later: subprocess.Popen[bytes] | None = None  # `rhythm backfill --later`
        self._last_later = time.monotonic()

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        s = self.stack.settings
        if s.supervisor_metrics_port:
            start_http_server(s.supervisor_metrics_port, "127.0.0.1", self._registry())
        self._adopt_previous()
        log.info("supervisor %d up (home %s)", os.getpid(), self.stack.home)
        while not self.stopping:
            now = time.monotonic()
            self._tick_kafka(now)
            for name in list(self.parts):
                if self.stopping:
                    break
                self._tick_part(name, time.monotonic())
            self._tick_later(time.monotonic())
            self._save()
            time.sleep(s.tick_s)
        self._save(stopped=True)
        log.info("supervisor %d stopping (the parts keep running until `rhythm down`)", os.getpid())
        return 0

    def _tick_later(self, now: float) -> None:
        """Every `later_interval_s` while the history lane runs: `rhythm backfill --later`
        in the background (one at a time), which imports what earlier imports left waiting
        once the live lane is done with its windows, and does nothing when none waits."""
        s = self.stack.settings
        if not s.later_interval_s or now - self._last_later < s.later_interval_s:
            return
        if self._later is not None and self._later.poll() is None:
            return  # the last one still imports
        history = self.records.get("history")
        if self.bootstrap is None or history is None or not history.ready:
            return  # no history lane to import into (yet)
        self._last_later = now
        argv = [
            sys.executable, "-m", "rhythm.stack.cli", "backfill", "--later", "--no-wait",
            "--bootstrap", self.bootstrap, "--metrics-port", str(s.history_metrics_port),
            "--live-metrics-port", str(s.processor_metrics_port), "--timeout", "300",
        ]  # fmt: skip
        # In the supervisor's process group: stopped with it (an import stopped before its
        # commit is imported again next time, as copies of what was stored).
        with (self.stack.logs / "later.log").open("ab") as out:
            self._later = subprocess.Popen(
                argv, env=self.parts["history"].env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Metrics(self))
        return registry

    def _adopt_previous(self) -> None:
        """Parts still running from a supervisor that died: watch them instead of starting
        second copies (their exit code is then unknown)."""
        previous = self.stack._state()
        if "kafka" in previous:  # an earlier supervisor's stack: whether it adopted Kafka
            self.kafka_adopted = bool(previous["kafka"].get("adopted"))
        elif any(isinstance(v, dict) and v.get("pid") for v in previous.values()):
            self.kafka_adopted = False  # a stack from before the supervisor started Kafka
        else:  # a Kafka running already was started by `rhythm kafka up`
            self.kafka_adopted = self.kafka.is_running()
        for name, old in previous.items():
            pid = old.get("pid") if isinstance(old, dict) else None
            if name in ("kafka", "supervisor") or not isinstance(pid, int) or not alive(pid):
                continue
            record = Record(name, log=old.get("log"))
            record.restarts = int(old.get("restarts") or 0)
            record.last_exit = old.get("last_exit")
            record.started(pid, time.monotonic(), restart=False)
            self.records[name] = record
            log.info("adopted %s (pid %d) left running by an earlier supervisor", name, pid)

    # -- Kafka ------------------------------------------------------------------------------

    def _kafka_nodes(self) -> list[LocalKafka]:
        k = self.kafka
        return list(k.nodes) if isinstance(k, LocalKafkaCluster) else [k]

    def _tick_kafka(self, now: float) -> None:
        record = self.records["kafka"]
        nodes = self._kafka_nodes()
        if record.state == "running":
            dead = [n for n in nodes if n.live_pid() is None]
            if not dead:
                return
            codes = [n.exit_code() for n in dead]
            reason = "; ".join(
                (f"node {n.settings.node_id} " if len(nodes) > 1 else "") + exit_reason(c)
                for n, c in zip(dead, codes, strict=True)
            )
            record.exited(codes[0], reason, self.policy, now)
            return
        if now < record.next_start:
            return
        restart = record.state == "backoff"
        try:
            bootstrap = self.kafka.up(topics=None if not restart else ())
        except LocalKafkaError as exc:
            record.started(None, now, restart=restart)
            record.exited(None, f"failed to start: {str(exc).splitlines()[0][:300]}", self.policy,
                          time.monotonic())  # fmt: skip
            return
        pids = [n.live_pid() for n in nodes]
        record.started(pids[0] if len(pids) == 1 else None, now, restart=restart)
        record.ready = True
        record.health = {"pids": pids, "bootstrap": bootstrap, "adopted": self.kafka_adopted}
        if self.bootstrap is None:
            self.bootstrap = bootstrap
            self.parts = {p.name: p for p in self.stack._parts(bootstrap)}
            for name in self.parts:
                self.records.setdefault(
                    name, Record(name, log=str(self.stack.logs / f"{name}.log"))
                )
        elif bootstrap != self.bootstrap:
            log.warning("Kafka came back at %s (was %s)", bootstrap, self.bootstrap)

    # -- the other parts --------------------------------------------------------------------

    def _tick_part(self, name: str, now: float) -> None:
        record, part = self.records[name], self.parts[name]
        if record.state == "running":
            assert record.pid is not None
            proc = self.procs.get(name)
            ours = proc is not None and proc.pid == record.pid
            code = proc.poll() if proc is not None and ours else None
            if code is not None or (not ours and not alive(record.pid)):
                record.exited(code, exit_reason(code), self.policy, now)
                return
            if not record.ready and part.ready_port and port_open("127.0.0.1", part.ready_port):
                record.ready = True
            verdict = self._health(name, part, record, now)
            if verdict is not None:
                grace = self.stack.settings.health_grace_s
                log.error("%s: /healthz failing for %.0f s (%s): restarting", name, grace, verdict)
                stop_group(proc if proc is not None and ours else record.pid, 15.0)
                code = proc.poll() if proc is not None and proc.pid == record.pid else None
                record.exited(code, f"unhealthy for {grace:.0f} s: {verdict}", self.policy, now)
            else:
                record.refresh(self.policy, now)
            return
        if now < record.next_start:
            return
        self._spawn(name, part, record, now)

    def _spawn(self, name: str, part: Part, record: Record, now: float) -> None:
        path = self.stack.logs / f"{name}.log"
        with path.open("ab") as out:
            out.write(f"\n=== rhythm supervisor: starting {name} {time.ctime()} ===\n".encode())
            out.flush()
            proc = subprocess.Popen(
                part.argv,
                env=part.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        record.started(proc.pid, now, restart=record.state == "backoff")
        log.info("%s started (pid %d)", name, proc.pid)

    def _health(self, name: str, part: Part, record: Record, now: float) -> str | None:
        """The failing /healthz verdict once it has failed for health_grace_s, else None."""
        s = self.stack.settings
        if not part.health_url or now - self._last_health.get(name, 0.0) < s.health_interval_s:
            return None
        self._last_health[name] = now
        ok, detail = probe_health(part.health_url)
        record.health = {"ok": ok, "detail": detail, "at": time.time()}
        if ok is None and now - record.started_mono < self.stack.settings.start_timeout_s:
            return None  # starting: not answering yet is not a verdict
        if ok:
            record.unhealthy_since = None
            return None
        if record.unhealthy_since is None:
            record.unhealthy_since = now
        if now - record.unhealthy_since >= s.health_grace_s:
            return detail
        return None

    # -- state ------------------------------------------------------------------------------

    def _save(self, *, stopped: bool = False) -> None:
        state: dict[str, Any] = {
            "supervisor": {
                "pid": None if stopped else os.getpid(),
                "metrics_port": self.stack.settings.supervisor_metrics_port or None,
                "updated_at": time.time(),
            },
        }
        for name, record in self.records.items():
            state[name] = record.as_dict()
        state["kafka"]["adopted"] = self.kafka_adopted
        self.stack._save(state)


def probe_health(url: str, timeout: float = 3.0) -> tuple[bool | None, str]:
    """(True, body) for 200, (False, reason) for another answer, (None, why) for none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return True, _reason(r.read())
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {_reason(exc.read())}"
    except OSError as exc:
        return None, f"not answering ({exc})"


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("detail") or ("ok" if data.get("live") else data))
    return str(data)[:200]


def main() -> None:
    from rhythm.stack.supervisor.control import Stack

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise SystemExit(Supervisor(Stack()).run())


if __name__ == "__main__":
    main()
