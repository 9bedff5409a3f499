"""``raysys up | down | drain | workers``: the named actors on a running Ray cluster.

Ray is imported only inside the handlers (through :mod:`raysys.client`), so the rest of the
CLI works without a cluster.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raysys.actor_config import DEFAULT_CONCURRENCY
from raysys.cli.common import EXIT_UNACCOUNTED, add_json_flag, emit, positive_int, workers_arg
from raysys.config import Settings


def register(sub: Any) -> None:
    """``up``, ``down``, ``drain``, ``workers``: the named actors on a running Ray cluster."""
    address = ("the Ray head's GCS address HOST:PORT; auto: RAY_ADDRESS, else the cluster "
               "running on this machine (default: auto)")
    p = sub.add_parser("up", help="start the named actors on a running Ray cluster")
    p.add_argument("--address", default="auto", help=address)
    p.add_argument("--workers", type=workers_arg, default=(2, 2),
                   help="worker actors: N, or MIN:MAX for a pool that follows the backlog "
                   "(default 2)")
    p.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                   help=f"leases each worker runs at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--batch", type=positive_int, default=50,
                   help="leases per assignment (default 50)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_up)
    p = sub.add_parser("down", help="stop the actors (Redis keeps every task)")
    p.add_argument("--address", default="auto", help=address)
    p.add_argument("--drain", action="store_true", help="let leased work finish first")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="with --drain: seconds to wait for leased work (default 60)")
    p.set_defaults(handler=cmd_down)
    p = sub.add_parser("drain", help="let workers finish their leased work and take no more")
    p.add_argument("--address", default="auto", help=address)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--worker", help="one worker id (default: the whole pool)")
    target.add_argument("--node", help="every worker on one node: its Ray node id, IP or host "
                        "name (a preStop hook's target)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for running work to finish (default 60)")
    p.set_defaults(handler=cmd_drain)
    p = sub.add_parser("workers", help="the worker pool: heartbeats, load, liveness")
    p.add_argument("--address", default="auto", help=address)
    add_json_flag(p)
    p.set_defaults(handler=cmd_workers)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.client import up

    client = up(args.address, workers=args.workers, batch=args.batch,
                concurrency=args.concurrency)
    try:
        url = client.serve(settings.http_host, settings.http_port)
        doc: dict[str, Any] = {"namespace": client.namespace, "http": url,
                               "workers": [w["id"] for w in client.workers()]}
    finally:
        client.shutdown()  # disconnects only: the detached actors keep running
    emit(doc, args.json, f"raysys is up in namespace {doc['namespace']}: "
         f"{len(doc['workers'])} workers; HTTP {url or 'not started'}")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.client import connect

    client = connect(args.address, settings=settings)
    try:
        client.down(drain=args.drain, timeout=args.timeout)
    finally:
        client.shutdown()
    print(f"raysys actors of namespace {client.namespace} stopped", file=sys.stderr)
    return 0


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.client import connect

    client = connect(args.address, settings=settings)
    try:
        done = client.drain(args.timeout, worker=args.worker, node=args.node)
    finally:
        client.shutdown()
    if not done:
        print("raysys: error: drain timed out with work still leased", file=sys.stderr)
        return EXIT_UNACCOUNTED
    print("drained")
    return 0


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    from raysys.client import connect

    client = connect(args.address, settings=settings)
    try:
        workers = client.workers()
    finally:
        client.shutdown()
    emit({"workers": workers}, args.json, "\n".join(
        f"{w['id']}  {'live' if w['alive'] else 'stale'}  node {w.get('node', '?')}  "
        f"inflight {w.get('inflight', 0)}  completed {w.get('completed', 0)}  "
        f"capacity {w['capacity']}  pid {w['pid']}{'  draining' if w['draining'] else ''}"
        for w in workers))
    return 0
