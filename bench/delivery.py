"""The delivery phase: committed events to a webhook receiver (``bench.receiver``).

Every run is a fresh daemon whose temp config adds one webhook sink to a receiver on
127.0.0.1, which records each event's receive time and its ``data.raw.sent_ns``:

1. steady state, per sink concurrency: the ingest phase's closed-loop load; delivered events/s
   are the receiver's first receipts inside the window. When delivery is slower than ingest the
   sink's lag grows (``lag_growth_per_s``) and the receipts' latency is queueing, not speed.
2. latency: open-loop pushes at ``--rate`` (like e2e), then wait until the sink is caught up;
   latency is receipt minus the push's send time, so it includes the ingest ack (reported too).
3. backlog: the receiver bound but not listening (connections refused, the breaker opens),
   ``--backlog`` events ingested as fast as the generator goes, then the receiver listens.
   ``drain_s`` runs from the first receipt to ``/v1/sinks`` showing the cursor at the head with
   nothing waiting; the breaker's cool-down before that first receipt is ``resume_wait_s``.
"""

from __future__ import annotations

import base64
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.load import HOST
from bench.phases import Load, generators, latency_ms, start_daemon
from bench.procs import Child, python, wait_until_ns
from bench.realtime import ReadyPoller, poll_interval_s
from bridge import config as bridge_config

SINK: Final = "bench"
SECRET: Final = "whsec_" + base64.b64encode(b"pbx-bridge-bench-secret-32bytes!").decode()
# The backlog run keeps the receiver down for ingest's whole duration: a short cool-down (its
# cap is ten times as long) bounds the wait for the probe once it is up, and a long schedule of
# short delays keeps the events that probes hit (every probe tries the same call's head) from
# being dead-lettered during an outage of up to ~10 minutes (one probe per 2 s at most).
COOL_DOWN_S: Final = 0.2
RETRY_SCHEDULE_S: Final = (0.0, 0.1, 0.2, 0.5) + (1.0,) * 300
CATCH_UP_TIMEOUT_S: Final = 60.0
# Longer than the breaker's longest cool-down (COOL_DOWN_S * 10), the one legitimate pause.
STALL_S: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    closed: Load  # the steady-state load (the ingest phase's)
    paced: Load  # the latency run's open loop
    concurrencies: tuple[int, ...]  # the first is the headline and the latency/backlog runs'
    batch_size: int  # the sink's: events per request
    backlog: int
    base: Path | None  # --config
    synchronous: str | None


def daemon_config(workdir: Path, settings: Settings, port: int, concurrency: int) -> Path:
    """The bench TOML (or the user's ``--config``) plus one webhook sink to the receiver."""
    schedule = ", ".join(f"{delay:g}" for delay in RETRY_SCHEDULE_S)
    sink = (
        f'\n[[sinks]]\ntype = "webhook"\nname = "{SINK}"\nurl = "http://{HOST}:{port}/hook"\n'
        f'secrets = ["{SECRET}"]\nconcurrency = {concurrency}\n'
        f"breaker_cool_down_s = {COOL_DOWN_S}\nretry_schedule_s = [{schedule}]\n"
        f"batch_size = {settings.batch_size}\n"
    )
    if settings.base is not None:
        text = settings.base.read_text()
    else:
        text = f'[storage]\nsynchronous = "{settings.synchronous or "full"}"\n'
        text += '\n[[sources]]\nname = "coocenter"\nvendor = "coocenter"\n'
    path = workdir / f"delivery-{port}.toml"
    path.write_text(text + sink)
    bridge_config.load(path)  # a ConfigError now, not a daemon that dies while we wait
    return path


class Sink:
    """The bench sink's row of ``GET /v1/sinks``, polled over one kept-alive connection."""

    def __init__(self, stack: ExitStack, port: int) -> None:
        self._poller = ReadyPoller(port, "/v1/sinks")
        stack.callback(self._poller.close)

    def get(self) -> dict[str, Any]:
        answer = self._poller.get()
        if "sinks" not in answer:  # e.g. 401: a --config with api.tokens (not supported here)
            raise RuntimeError(f"GET /v1/sinks: {answer}")
        found: dict[str, Any] = next(s for s in answer["sinks"] if s["name"] == SINK)
        return found

    def wait_caught_up(self, daemon: Child, timeout_s: float) -> tuple[dict[str, Any], int, bool]:
        """Until the cursor is at the head with nothing waiting or in flight, or it stalls.

        Returns the last state, when it was read, and whether the sink stalled: no progress
        for ``STALL_S`` with a lag left (a wedged sink should be a figure, not a hung bench).
        """
        started = since = time.monotonic()
        first = state = self.get()
        progress = _progress(state)
        while state["lag"] or state["in_memory"] or state["in_flight"]:
            now = time.monotonic()
            if now - started > timeout_s or daemon.proc.poll() is not None:
                raise RuntimeError(f"delivery: not caught up after {now - started:.0f}s: {state}")
            if _progress(state) != progress:
                progress, since = _progress(state), now
            elif now - since > STALL_S:
                return state, time.monotonic_ns(), True
            done = state["cursor"] - first["cursor"]
            time.sleep(poll_interval_s(done, state["lag"], now - started))
            state = self.get()
        return state, time.monotonic_ns(), False


def _progress(state: dict[str, Any]) -> tuple[int, ...]:
    return tuple(state[key] for key in ("cursor", "delivered", "retried", "in_memory"))


def start_receiver(stack: ExitStack, workdir: Path, tag: str, gated: bool) -> tuple[Child, int]:
    argv = python("bench.receiver", "--port=0", *(["--gated"] if gated else []))
    child = Child(f"receiver-{tag}", argv, workdir / f"receiver-{tag}.out")
    stack.callback(child.stop)
    return child, int(child.wait_line(lambda item: item.get("event") == "bound")["port"])


def _received(receiver: Child) -> dict[str, Any]:
    receiver.interrupt()
    return receiver.result()


def _cpu_pct(before: list[float], after: list[float], seconds: float) -> list[float]:
    return [(b - a) / seconds * 100 for a, b in zip(before, after, strict=True)]


def steady(workdir: Path, settings: Settings, concurrency: int) -> dict[str, Any]:
    """Closed-loop ingest for the window; what reached the receiver meanwhile."""
    load, tag = settings.closed, f"delivery-c{concurrency}"
    with ExitStack() as stack:
        receiver, rport = start_receiver(stack, workdir, tag, gated=False)
        config = daemon_config(workdir, settings, rport, concurrency)
        daemon, port = start_daemon(stack, workdir, tag, config)
        sink = Sink(stack, port)
        gens, start, end = generators(stack, workdir, tag, "closed", port, load)
        wait_until_ns(start)
        procs = [daemon, receiver, *gens]
        cpu0, sink0 = [p.cpu_s() for p in procs], sink.get()
        wait_until_ns(end)
        cpu1, sink1 = [p.cpu_s() for p in procs], sink.get()
        windows = [gen.result() for gen in gens]
        daemon.stop()  # first, so it is not left retrying into a receiver that went away
        done = _received(receiver)
    inside = [(sent, recv) for _, sent, recv in done["samples"] if start <= recv < end]
    acks = [value for window in windows for value in window["latencies_us"]]
    cpu = _cpu_pct(cpu0, cpu1, load.duration_s)
    return {
        "concurrency": concurrency,
        "delivered_per_s": len(inside) / load.duration_s,
        "daemon_delivered_per_s": (sink1["delivered"] - sink0["delivered"]) / load.duration_s,
        "ingest_events_per_s": len(acks) / load.duration_s,
        "lag_start": sink0["lag"],
        "lag_end": sink1["lag"],
        "lag_growth_per_s": (sink1["lag"] - sink0["lag"]) / load.duration_s,
        # Receipt minus send time of what arrived in the window: queueing once lag grows.
        "receipt_latency": latency_ms([(recv - sent) // 1000 for sent, recv in inside]),
        "ack": latency_ms(acks),
        "duplicates": done["duplicates"],
        "retried": sink1["retried"],
        "server_cpu_pct": cpu[0],
        "receiver_cpu_pct": cpu[1],
        "loadgen_cpu_pct": cpu[2:],
    }


def latency(workdir: Path, settings: Settings, concurrency: int) -> dict[str, Any]:
    """Open-loop pushes at ``paced.rate``; send-to-receipt latency of each."""
    load, tag = settings.paced, "delivery-latency"
    with ExitStack() as stack:
        receiver, rport = start_receiver(stack, workdir, tag, gated=False)
        config = daemon_config(workdir, settings, rport, concurrency)
        daemon, port = start_daemon(stack, workdir, tag, config)
        sink = Sink(stack, port)
        gens, start, end = generators(stack, workdir, tag, "open", port, load)
        wait_until_ns(start)
        cpu0 = [daemon.cpu_s(), receiver.cpu_s()]
        wait_until_ns(end)
        cpu1 = [daemon.cpu_s(), receiver.cpu_s()]
        windows = [gen.result() for gen in gens]
        state, _, stalled = sink.wait_caught_up(daemon, CATCH_UP_TIMEOUT_S)
        daemon.stop()
        done = _received(receiver)
    latencies = [(recv - sent) // 1000 for _, sent, recv in done["samples"] if start <= sent < end]
    acks = [value for window in windows for value in window["latencies_us"]]
    sent = sum(window["sent"] for window in windows)
    cpu = _cpu_pct(cpu0, cpu1, load.duration_s)
    return {
        "concurrency": concurrency,
        "offered_per_s": sent / load.duration_s,
        "sent": sent,
        "received": len(latencies),
        "duplicates": done["duplicates"],
        "retried": state["retried"],
        "stalled_at": state["cursor"] if stalled else None,
        **latency_ms(latencies),
        "ack": latency_ms(acks),
        "errors": sum(window["errors"] for window in windows),
        "server_cpu_pct": cpu[0],
        "receiver_cpu_pct": cpu[1],
    }


def backlog(workdir: Path, settings: Settings, concurrency: int) -> dict[str, Any]:
    """``settings.backlog`` events ingested with the receiver down, then drained."""
    tag = "delivery-backlog"
    # Closed loop until ``count`` requests; the window is a deadline (1000/s at least, else
    # ``events`` says how many went in), so a daemon slowed down by the outage cannot hang us.
    load = Load(
        duration_s=30.0 + settings.backlog / 1000,
        warmup_s=0.0,
        connections=settings.closed.connections,
        procs=settings.closed.procs,
        rate=settings.closed.rate,
    )
    with ExitStack() as stack:
        receiver, rport = start_receiver(stack, workdir, tag, gated=True)
        config = daemon_config(workdir, settings, rport, concurrency)
        daemon, port = start_daemon(stack, workdir, tag, config)
        sink = Sink(stack, port)
        count = -(-settings.backlog // load.procs)  # ceil: at least --backlog in all
        gens, start, _ = generators(stack, workdir, tag, "closed", port, load, count=count)
        windows = [gen.result(load.duration_s + 10) for gen in gens]
        ingest_ns = time.monotonic_ns() - start
        down = sink.get()
        cpu0 = [daemon.cpu_s(), receiver.cpu_s()]
        receiver.proc.send_signal(signal.SIGUSR1)
        up_ns = int(receiver.wait_line(lambda item: item.get("event") == "listening")["at_ns"])
        timeout_s = CATCH_UP_TIMEOUT_S + settings.backlog / 200
        state, done_ns, stalled = sink.wait_caught_up(daemon, timeout_s)
        cpu1 = [daemon.cpu_s(), receiver.cpu_s()]
        daemon.stop()
        done = _received(receiver)
    events = down["lag"] + down["cursor"]  # the head: every event matches the sink
    first_ns = min((recv for _, _, recv in done["samples"]), default=done_ns)
    drain_s = None if stalled else (done_ns - first_ns) / 1e9
    cpu = _cpu_pct(cpu0, cpu1, (done_ns - up_ns) / 1e9)
    return {
        "concurrency": concurrency,
        "requested": settings.backlog,
        "events": events,
        "ingest_events_per_s": sum(len(w["latencies_us"]) for w in windows) / (ingest_ns / 1e9),
        "ingest_errors": sum(window["errors"] for window in windows),
        "breaker_while_down": down["breaker"],
        "lag_while_down": down["lag"],
        "resume_wait_s": (first_ns - up_ns) / 1e9,
        "drain_s": drain_s,
        "drain_events_per_s": len(done["samples"]) / drain_s if drain_s else None,
        # The sink stopped moving with a lag left: where, and what it showed then.
        "stalled_at": state["cursor"] if stalled else None,
        "received": len(done["samples"]),
        "missing": events - len(done["samples"]),
        "duplicates": done["duplicates"],
        "retried": state["retried"],
        "dead": state["dead"],
        "server_cpu_pct": cpu[0],
        "receiver_cpu_pct": cpu[1],
    }


def measure(workdir: Path, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": settings.batch_size, "steady": []}
    for concurrency in settings.concurrencies:
        print(f"          webhook concurrency {concurrency}, closed loop ...", flush=True)
        out["steady"].append(steady(workdir, settings, concurrency))
    first = settings.concurrencies[0]
    print(f"          latency at {settings.paced.rate:g} pushes/s ...", flush=True)
    out["latency"] = latency(workdir, settings, first)
    print(f"          backlog of {settings.backlog} events ...", flush=True)
    out["backlog"] = backlog(workdir, settings, first)
    return out


def table_rows(phase: dict[str, Any] | None) -> list[str]:
    """``bench.run``'s table rows for this phase (same columns)."""
    if not phase:
        return []
    rows = []
    batch = f" b={phase['batch_size']}" if phase["batch_size"] > 1 else ""
    for run in phase["steady"]:
        gen_cpu = "+".join(f"{cpu:.0f}" for cpu in run["loadgen_cpu_pct"])
        late = run["receipt_latency"]
        label = f"webhook c={run['concurrency']}{batch}"
        rows.append(
            f"{label:<22}{run['delivered_per_s']:>10.0f}"
            f"{late['p50_ms']:>9.2f}{late['p99_ms']:>9.2f}{run['server_cpu_pct']:>8.0f}%"
            f"{gen_cpu:>8}%   (ingest {run['ingest_events_per_s']:.0f}/s, sink lag "
            f"{run['lag_growth_per_s']:+.0f}/s, receiver {run['receiver_cpu_pct']:.0f}%)"
        )
    paced = phase["latency"]
    rows.append(
        f"{'ingest -> webhook':<22}{paced['offered_per_s']:>10.0f}{paced['p50_ms']:>9.2f}"
        f"{paced['p99_ms']:>9.2f}{paced['server_cpu_pct']:>8.0f}%"
        f"   ({paced['received']}/{paced['sent']} received, "
        f"ack p99 {paced['ack']['p99_ms']:.2f} ms)"
    )
    drained = phase["backlog"]
    label = f"backlog drain c={drained['concurrency']}{batch}"
    if drained["stalled_at"] is not None:
        rows.append(
            f"{label:<22}{'STALLED':>10}   (no progress at cursor {drained['stalled_at']} of "
            f"{drained['events']}; {drained['received']} received)"
        )
    else:
        rows.append(
            f"{label:<22}{drained['drain_events_per_s']:>10.0f}{'-':>9}{'-':>9}"
            f"{drained['server_cpu_pct']:>8.0f}%   ({drained['events']} events in "
            f"{drained['drain_s']:.1f} s after {drained['resume_wait_s']:.2f} s for the breaker; "
            f"{drained['duplicates']} twice, {drained['missing']} missing)"
        )
    rows.append(
        f"{'ingest, sink down':<22}{drained['ingest_events_per_s']:>10.0f}"
        f"   (the backlog's ingest, receiver refusing connections)"
    )
    return rows
