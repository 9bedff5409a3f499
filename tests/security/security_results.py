"""Security rows in the results file the chaos suite writes (``docs/RELIABILITY.md``).

The file is :class:`tests.support.results.ResultsFile` (rows keyed by (suite, id), rendered by
``python -m tests.chaos.report``). A security row carries the fields the report's security
table reads (``scenario``, ``size``, ``seed``, ``attempted``, ``executed``, ``rejected``,
``audited``, ``passed``, ``notes``), the percentages and the rejection latency as fields
(``rejected_pct``, ``audited_pct``, ``latency_p50_ms``, ``latency_p99_ms``, ``latency_what``)
and, since the table has no column for them, at the head of ``notes``. Row ids sort in the
order of issue 8's items (``1-redis`` … ``8-bandit``).

A test writes its row *before* asserting, so a failed run is recorded (``passed: false`` with
its ``problems``) and shows up in the report's "Broken invariants" section.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tests.support.results import percentile


def ms_percentiles(seconds: Iterable[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in milliseconds, rounded, of durations given in seconds."""
    values = [s * 1000 for s in seconds]
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return (None if p50 is None else round(p50, 3), None if p99 is None else round(p99, 3))


def _pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


def security_row(row_id: str, scenario: str, *, size: str, seed: int | str, attempted: int,
                 executed: int, rejected: int, audited: int | None,
                 problems: Sequence[str], latencies_s: Sequence[float] = (),
                 latency_what: str = "", duration_s: float | None = None,
                 env: dict[str, Any] | None = None, notes: str = "",
                 attack: bool = True, **extra: Any) -> dict[str, Any]:
    """One results row of suite ``security``.

    The report's security table shows the counts; the percentages and the rejection latency
    lead the row's notes (which the report prints under the table), so the document carries
    every figure without a column of its own. ``attack=False``: a row that shows something
    works (the demo over TLS, a scan) rather than counting rejected attacks.
    """
    p50, p99 = ms_percentiles(latencies_s)
    rejected_pct = _pct(rejected, attempted)
    audited_pct = None if audited is None else _pct(audited, attempted)
    figures = []
    if attack:
        figures.append(f"rejected {rejected_pct} %" if rejected_pct is not None
                       else "nothing attempted")
    if audited_pct is not None:
        figures.append(f"audited {audited_pct} %")
    if p50 is not None:
        figures.append(f"rejection latency p50 {p50:g} ms, p99 {p99:g} ms ({latency_what})")
    if duration_s is not None:
        figures.append(f"{duration_s:.1f} s")
    return {"suite": "security", "id": row_id, "scenario": scenario, "size": size,
            "seed": seed, "attempted": attempted, "executed": executed, "rejected": rejected,
            "audited": audited, "rejected_pct": rejected_pct, "audited_pct": audited_pct,
            "latency_p50_ms": p50, "latency_p99_ms": p99, "latency_what": latency_what,
            "duration_s": None if duration_s is None else round(duration_s, 1),
            "passed": not problems, "problems": list(problems)[:10],
            "notes": "; ".join(figures) + (f". {notes}" if notes else ""),
            "env": env or {}, **extra}
