"""raysys against Dramatiq, side by side in one invocation: no-op tasks/s and their ratio.

A benchmark, not a test: it prints figures, and fails only when a side fails or skips work.
The sides run one after the other (``--rounds`` alternates them), each on its own Redis with AOF
on and the same ``appendfsync``, so the ratio of the medians holds on a noisy machine.

- Dramatiq (``benchmarks/dramatiq_app.py``): ``RedisBroker`` with the ``Results`` middleware, a
  no-op actor with ``store_results=True``, the ``dramatiq`` CLI as workers, on an
  ``EmbeddedRedis``. Once every worker process is ready, ``--senders`` threads call
  ``actor.send()`` N times (Dramatiq has no batch enqueue). Timed from the first send until,
  after the last one, the broker's message hashes (``dramatiq:default.msgs`` and its delay
  queue's) are empty: a message leaves its hash only on ack, after its result is stored. Then
  every result is read back and checked.
- raysys: ``raysys bench --tasks N --fsync F --json`` in a private environment, timed by itself
  from its first submit to its last commit, with lost tasks and duplicate commits counted.

Usage: python benchmarks/compare_dramatiq.py [--tasks 20000] [--rounds 1]
       [--fsync always|everysec] [--processes 2] [--threads 8] [--senders 8] [--json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

from raysys.redis_server.binary import free_port
from raysys.redis_server.embedded import EmbeddedRedis

HERE = Path(__file__).resolve().parent
URL_ENV = "DRAMATIQ_BENCH_REDIS_URL"  # read by dramatiq_app
READY_LINE = "Worker process is ready for action."
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 30.0
CHUNK = 1000  # results read back per pipeline
# Ray's socket paths, under raysys's TMPDIR, must fit 107 bytes: its side runs under /tmp.
SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None


class BenchError(Exception):
    """A side failed or lost work: one line on stderr, exit 1."""


def log(message: str) -> None:
    print(f"compare_dramatiq: {message}", file=sys.stderr, flush=True)


# ---- Dramatiq ---------------------------------------------------------------------------------
def start_workers(url: str, processes: int, threads: int, cwd: Path) -> subprocess.Popen[str]:
    """The ``dramatiq`` CLI in its own session: a terminal's Ctrl-C reaches only this script,
    which stops the workers itself (and a SIGKILL to the session reaches them all)."""
    command = [sys.executable, "-m", "dramatiq", "dramatiq_app:broker", "--path", str(HERE),
               "--processes", str(processes), "--threads", str(threads)]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, URL_ENV: url},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_ready(proc: subprocess.Popen[str], processes: int) -> None:
    """Until each worker process logged its ready line; a thread keeps draining stderr."""
    ready, tail = threading.Event(), collections.deque[str](maxlen=20)

    def reader() -> None:
        assert proc.stderr is not None
        seen = 0
        for line in proc.stderr:
            tail.append(line.rstrip())
            seen += READY_LINE in line
            if seen >= processes:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited {proc.returncode} before they were ready" if proc.returncode is not None
                   else f"not ready within {READY_TIMEOUT_S:.0f} s")
            lines = list(tail)  # a snapshot: the reader thread may still append
            cause = next((line for line in reversed(lines) if "Error" in line),
                         lines[-1] if lines else "no output")
            raise BenchError(f"Dramatiq workers {why}: {cause}")


def stop_workers(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the CLI stops and joins its worker processes), then SIGKILL to the session."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log("Dramatiq workers ignored SIGTERM; killing them")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def send_all(actor: Any, tasks: int, senders: int) -> list[Any]:
    """``actor.send(i)`` for every i, over ``senders`` threads; the messages sent. The threads
    stop early when the caller is interrupted."""
    stop = threading.Event()

    def send(part: range) -> list[Any]:
        return [actor.send(i) for i in part if not stop.is_set()]

    pool = ThreadPoolExecutor(senders)
    try:
        futures = [pool.submit(send, range(k, tasks, senders)) for k in range(senders)]
        return [message for future in futures for message in future.result()]
    finally:
        stop.set()
        pool.shutdown()


def wait_drained(client: Any, proc: subprocess.Popen[str]) -> None:
    """Until every message is acked: the queue's and its delay queue's hashes are empty."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while client.hlen("dramatiq:default.msgs") + client.hlen("dramatiq:default.DQ.msgs"):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "the workers exited" if proc.returncode is not None else "timeout"
            raise BenchError(f"Dramatiq did not process every message ({why})")
        time.sleep(0.01)


def count_results(client: Any, backend: Any, messages: list[Any]) -> int:
    """How many messages have their expected result (``i``) stored; an error is stored as a
    dict, so it does not count."""
    good = 0
    for start in range(0, len(messages), CHUNK):
        chunk = messages[start:start + CHUNK]
        with client.pipeline(transaction=False) as pipe:
            for message in chunk:
                pipe.lindex(backend.build_message_key(message), 0)
            stored = pipe.execute()
        good += sum(data is not None and backend.encoder.decode(data) == message.args[0]
                    for message, data in zip(chunk, stored, strict=True))
    return good


def run_dramatiq(tasks: int, fsync: str, processes: int, threads: int, senders: int
                 ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cd-", ignore_cleanup_errors=True) as tmp:
        log(f"Dramatiq and its Redis in {tmp}")
        server = EmbeddedRedis(Path(tmp), password=None, appendfsync=fsync).start()
        try:
            os.environ[URL_ENV] = server.url  # importing dramatiq_app needs it, once
            broker, backend, actor = importlib.import_module("dramatiq_app").build(server.url)
            proc = start_workers(server.url, processes, threads, Path(tmp))
            try:
                wait_ready(proc, processes)
                started = time.perf_counter()
                messages = send_all(actor, tasks, senders)
                wait_drained(broker.client, proc)
                seconds = time.perf_counter() - started
            finally:
                stop_workers(proc)
            dead = broker.client.hlen("dramatiq:default.XQ.msgs")
            processed = count_results(broker.client, backend, messages)
        finally:
            server.stop()
    if processed != tasks or dead:
        raise BenchError(f"Dramatiq processed {processed} of {tasks} messages ({dead} dead)")
    return {"tasks": tasks, "processed": processed, "seconds": round(seconds, 2),
            "tasks_per_s": round(tasks / seconds, 1),
            "settings": {"fsync": fsync, "processes": processes, "threads": threads,
                         "senders": senders, "results": True, "version": version("dramatiq")}}


# ---- raysys -----------------------------------------------------------------------------------
def raysys_env(root: Path) -> dict[str, str]:
    """The caller's environment minus raysys/Redis/Ray-address settings, with a private HOME,
    data dir, TMPDIR and HTTP port: nothing shared with another run on this machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYSYS_", "REDIS_")) and k not in ("RAY_ADDRESS", "TMPDIR")}
    for sub in "hdt":  # short names, as SHORT_TMP
        (root / sub).mkdir()
    env.update(HOME=str(root / "h"), RAYSYS_DATA_DIR=str(root / "d"), TMPDIR=str(root / "t"),
               RAYSYS_HTTP_PORT=str(free_port()))
    return env


def stop_raysys(proc: subprocess.Popen[str]) -> None:
    """After Ctrl-C (a terminal sends it there too): time to stop Ray, then SIGINT, SIGKILL."""
    for sig in (None, signal.SIGINT, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
            return


def run_raysys(tasks: int, fsync: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "raysys.cli", "bench", "--tasks", str(tasks),
               "--fsync", fsync, "--json"]
    with tempfile.TemporaryDirectory(prefix="cr-", dir=SHORT_TMP,
                                     ignore_cleanup_errors=True) as tmp:
        log(f"raysys bench in {tmp}")
        proc = subprocess.Popen(command, cwd=tmp, env=raysys_env(Path(tmp)), text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            stdout, _ = proc.communicate()
        except BaseException:
            stop_raysys(proc)
            raise
    if proc.returncode != 0 or not stdout.startswith("{"):
        raise BenchError(f"raysys bench exited {proc.returncode} (its stderr is above)")
    report: dict[str, Any] = json.loads(stdout)
    if report["lost"] or report["duplicate_commits"]:
        raise BenchError(f"raysys lost {report['lost']} tasks and committed "
                         f"{report['duplicate_commits']} twice")
    return report


# ---- report -----------------------------------------------------------------------------------
def compare(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for n in range(1, args.rounds + 1):
        log(f"round {n}/{args.rounds}: Dramatiq, {args.tasks} messages")
        dq = run_dramatiq(args.tasks, args.fsync, args.processes, args.threads, args.senders)
        log(f"round {n}/{args.rounds}: Dramatiq {dq['tasks_per_s']:,.0f} tasks/s; raysys bench")
        rounds.append({"dramatiq": dq, "raysys": run_raysys(args.tasks, args.fsync)})
        log(f"round {n}/{args.rounds}: raysys {rounds[-1]['raysys']['tasks_per_s']:,.0f} tasks/s")
    dq_median = statistics.median(r["dramatiq"]["tasks_per_s"] for r in rounds)
    rs_median = statistics.median(r["raysys"]["tasks_per_s"] for r in rounds)
    return {"tasks": args.tasks, "fsync": args.fsync, "rounds": rounds,
            "dramatiq_tasks_per_s": dq_median, "raysys_tasks_per_s": rs_median,
            "ratio": round(rs_median / dq_median, 3)}


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['tasks']} no-op tasks, appendfsync {report['fsync']}")
    print(f"{'round':>6}  {'dramatiq tasks/s':>16}  {'raysys tasks/s':>14}  {'ratio':>6}")
    for n, r in enumerate(report["rounds"], 1):
        dq, rs = r["dramatiq"]["tasks_per_s"], r["raysys"]["tasks_per_s"]
        print(f"{n:>6}  {dq:>16,.0f}  {rs:>14,.0f}  {rs / dq:>6.2f}")
    print(f"{'median':>6}  {report['dramatiq_tasks_per_s']:>16,.0f}  "
          f"{report['raysys_tasks_per_s']:>14,.0f}  {report['ratio']:>6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--processes", type=int, default=2, help="Dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per Dramatiq process")
    parser.add_argument("--senders", type=int, default=8, help="threads enqueueing to Dramatiq")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if min(args.tasks, args.rounds, args.processes, args.threads, args.senders) < 1:
        parser.error("--tasks, --rounds, --processes, --threads and --senders must be >= 1")
    sys.path.insert(0, str(HERE))  # dramatiq_app
    try:
        if importlib.util.find_spec("dramatiq") is None:
            raise BenchError("Dramatiq is not installed: pip install 'dramatiq[redis]'")
        report = compare(args)
    except BenchError as exc:
        print(f"compare_dramatiq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("compare_dramatiq: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
