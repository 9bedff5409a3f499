"""raysys against Dramatiq, side by side in one invocation: tasks/s, CPU per task, the ratio.

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

Workloads (``--workload``), the same on both sides: ``noop``; ``sleep`` (``--ms`` of waiting, an
I/O-bound task: raysys's built-in ``sleep`` kind, ``time.sleep`` in Dramatiq); ``spin`` (``--ms``
of pure-Python work: raysys's ``spin`` kind). Each side runs with its defaults (Dramatiq: a
process per core x 8 threads; raysys: 2 workers x 16); ``--equal`` adds a raysys run with as
many leases in flight as Dramatiq has threads (``--concurrency`` = threads x processes / 2).
CPU per task is the CPU time (user + system) of everything the side ran, Redis included, over
its tasks (``getrusage`` of this process and its waited-for children).

Usage: python benchmarks/compare_dramatiq.py [--tasks 20000] [--rounds 1] [--workload noop]
       [--ms 20] [--equal] [--fsync always|everysec] [--processes 2] [--threads 8]
       [--senders 8] [--json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import importlib.util
import json
import os
import resource
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
def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children (and theirs), so far."""
    mine, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + kids.ru_utime + kids.ru_stime


def start_workers(url: str, processes: int, threads: int, cwd: Path,
                  workload: str) -> subprocess.Popen[str]:
    """The ``dramatiq`` CLI in its own session: a terminal's Ctrl-C reaches only this script,
    which stops the workers itself (and a SIGKILL to the session reaches them all)."""
    command = [sys.executable, "-m", "dramatiq", "dramatiq_app:broker", "--path", str(HERE),
               "--processes", str(processes), "--threads", str(threads)]
    env = {**os.environ, URL_ENV: url, "DRAMATIQ_BENCH_WORKLOAD": workload}
    return subprocess.Popen(command, cwd=cwd, env=env,
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


def send_all(actor: Any, tasks: int, senders: int, extra: tuple[Any, ...] = ()) -> list[Any]:
    """``actor.send(i, *extra)`` for every i, over ``senders`` threads; the messages sent. The
    threads stop early when the caller is interrupted."""
    stop = threading.Event()

    def send(part: range) -> list[Any]:
        return [actor.send(i, *extra) for i in part if not stop.is_set()]

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


def run_dramatiq(args: argparse.Namespace) -> dict[str, Any]:
    tasks, fsync, processes, threads = args.tasks, args.fsync, args.processes, args.threads
    extra = {"noop": (), "sleep": (args.ms / 1000,), "spin": (args.ms,)}[args.workload]
    cpu_before = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="cd-", ignore_cleanup_errors=True) as tmp:
        log(f"Dramatiq and its Redis in {tmp}")
        server = EmbeddedRedis(Path(tmp), password=None, appendfsync=fsync).start()
        try:
            os.environ[URL_ENV] = server.url  # importing dramatiq_app needs it, once
            broker, backend, actor = importlib.import_module("dramatiq_app").build(
                server.url, args.workload)
            proc = start_workers(server.url, processes, threads, Path(tmp), args.workload)
            try:
                wait_ready(proc, processes)
                started = time.perf_counter()
                messages = send_all(actor, tasks, args.senders, extra)
                wait_drained(broker.client, proc)
                seconds = time.perf_counter() - started
            finally:
                stop_workers(proc)
            dead = broker.client.hlen("dramatiq:default.XQ.msgs")
            processed = count_results(broker.client, backend, messages)
        finally:
            server.stop()
    cpu = cpu_seconds() - cpu_before
    if processed != tasks or dead:
        raise BenchError(f"Dramatiq processed {processed} of {tasks} messages ({dead} dead)")
    return {"tasks": tasks, "processed": processed, "seconds": round(seconds, 2),
            "tasks_per_s": round(tasks / seconds, 1), "cpu_ms_per_task": round(
                1000 * cpu / tasks, 3), "in_flight": processes * threads,
            "settings": {"fsync": fsync, "processes": processes, "threads": threads,
                         "senders": args.senders, "results": True,
                         "version": version("dramatiq")}}


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


def run_raysys(args: argparse.Namespace, concurrency: int | None = None) -> dict[str, Any]:
    tasks = args.tasks
    command = [sys.executable, "-m", "raysys.cli", "bench", "--tasks", str(tasks),
               "--fsync", args.fsync, "--json", "--kind", args.workload]
    payload = {"noop": None, "sleep": {"seconds": args.ms / 1000},
               "spin": {"ms": args.ms}}[args.workload]
    if payload is not None:
        command += ["--payload", json.dumps(payload)]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    cpu_before = cpu_seconds()
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
    warmup = int(report.get("warmup", {}).get("tasks", 0))
    report["cpu_ms_per_task"] = round(1000 * (cpu_seconds() - cpu_before) / (tasks + warmup), 3)
    report["in_flight"] = report["settings"]["workers"] * report["settings"]["concurrency"]
    if report["lost"] or report["duplicate_commits"]:
        raise BenchError(f"raysys lost {report['lost']} tasks and committed "
                         f"{report['duplicate_commits']} twice")
    return report


# ---- report -----------------------------------------------------------------------------------
def compare(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    equal = max(1, args.threads * args.processes // 2)  # raysys runs 2 workers
    for n in range(1, args.rounds + 1):
        log(f"round {n}/{args.rounds}: Dramatiq, {args.tasks} {args.workload} messages")
        dq = run_dramatiq(args)
        log(f"round {n}/{args.rounds}: Dramatiq {dq['tasks_per_s']:,.0f} tasks/s; raysys bench")
        row = {"dramatiq": dq, "raysys": run_raysys(args)}
        log(f"round {n}/{args.rounds}: raysys {row['raysys']['tasks_per_s']:,.0f} tasks/s")
        if args.equal:
            row["raysys_equal"] = run_raysys(args, equal)
            log(f"round {n}/{args.rounds}: raysys at {2 * equal} in flight "
                f"{row['raysys_equal']['tasks_per_s']:,.0f} tasks/s")
        rounds.append(row)
    out: dict[str, Any] = {"tasks": args.tasks, "workload": args.workload, "ms": args.ms,
                           "fsync": args.fsync, "rounds": rounds}
    for side in ("dramatiq", "raysys", "raysys_equal"):
        if side in rounds[0]:
            out[f"{side}_tasks_per_s"] = statistics.median(r[side]["tasks_per_s"] for r in rounds)
            out[f"{side}_cpu_ms_per_task"] = statistics.median(
                r[side]["cpu_ms_per_task"] for r in rounds)
    out["ratio"] = round(out["raysys_tasks_per_s"] / out["dramatiq_tasks_per_s"], 3)
    if args.equal:
        out["ratio_equal_in_flight"] = round(
            out["raysys_equal_tasks_per_s"] / out["dramatiq_tasks_per_s"], 3)
    return out


def print_table(report: dict[str, Any]) -> None:
    what = report["workload"] + (f" {report['ms']:g} ms" if report["workload"] != "noop" else "")
    print(f"{report['tasks']} tasks ({what}), appendfsync {report['fsync']}")
    sides = [s for s in ("dramatiq", "raysys", "raysys_equal") if s in report["rounds"][0]]
    print(f"{'round':>6}  " + "  ".join(f"{s + ' tasks/s':>20}" for s in sides) + "   ratio")
    for n, r in enumerate(report["rounds"], 1):
        rates = [r[s]["tasks_per_s"] for s in sides]
        print(f"{n:>6}  " + "  ".join(f"{x:>20,.0f}" for x in rates)
              + f"  {rates[1] / rates[0]:>6.2f}")
    print(f"{'median':>6}  " + "  ".join(f"{report[s + '_tasks_per_s']:>20,.0f}" for s in sides)
          + f"  {report['ratio']:>6.2f}")
    print(f"{'cpu ms':>6}  " + "  ".join(f"{report[s + '_cpu_ms_per_task']:>20.3f}"
                                         for s in sides) + "  per task")
    for s in sides:
        print(f"{s}: {report['rounds'][0][s]['in_flight']} in flight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workload", choices=["noop", "sleep", "spin"], default="noop")
    parser.add_argument("--ms", type=float, default=20.0, help="sleep/spin length per task")
    parser.add_argument("--equal", action="store_true",
                        help="also run raysys with as many tasks in flight as Dramatiq")
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
