"""Sign and verify a realistic task record with each algorithm; print µs per operation.

Usage: python benchmarks/sign_bench.py [--n 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from raysys.models import TaskSpec, new_task_id, record_body
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import ALGORITHMS, Keyring, generate_key


def measure(alg: str, n: int) -> dict[str, float]:
    sealer = Sealer(Keyring([generate_key(alg)]))  # type: ignore[arg-type]
    spec = TaskSpec.build(kind="resize-image", priority=5, idempotency_key="order-123-thumb",
                          payload={"bucket": "uploads", "key": "2026/11/26/photo-8812.jpg",
                                   "sizes": [64, 128, 512], "notify": "user-42"})
    bodies = [record_body(new_task_id(), spec, "prod") for _ in range(n)]
    t0 = time.perf_counter()
    sealed = [sealer.seal("task", b) for b in bodies]
    t1 = time.perf_counter()
    for data in sealed:
        sealer.open(data, "task")
    t2 = time.perf_counter()
    return {"alg": alg, "record_bytes": len(sealed[0]),  # type: ignore[dict-item]
            "sign_us": (t1 - t0) / n * 1e6, "verify_us": (t2 - t1) / n * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(alg, args.n) for alg in ALGORITHMS]
    if args.json:
        print(json.dumps({"results": rows}))
    else:
        for row in rows:
            print(f"{row['alg']:12} {row['record_bytes']} B  sign {row['sign_us']:7.1f} µs  "
                  f"verify {row['verify_us']:7.1f} µs", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
