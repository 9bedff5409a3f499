"""Redrive: run finished tasks again after a fix (dead letters), keeping id, history and audit.

The one exception to "a final task never runs again" (DESIGN.md, "Threat model"), made only
on an operator's request and audited per task. Each task is verified before its record is
signed afresh, so a tampered record never becomes a validly signed one:

* its task record must verify as this task's (signature, key, id, namespace);
* a dead or cancelled task's completion record must verify as this task's and lie inside the
  replay window (a copied record of a purged task is older than that: retention.py);
* a quarantined task has no completion record; its task record must lie inside the window.

The script then applies only where the state and the record bytes are still what was verified
(``redrive.lua``), and is idempotent by request id: a resent call redrives nothing twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raysys.errors import IntegrityError, ValidationError
from raysys.store.records import AUDIT_MAXLEN, COMPLETION, RECORD, check_task_id
from raysys.store.replies import as_bytes, as_text
from raysys.store.retention import StoreRetention

log = logging.getLogger(__name__)
REDRIVABLE = ("dead", "cancelled", "quarantined")
REDRIVE_BATCH = 200
MAX_REDRIVE = 100_000  # tasks one call may select by state


@dataclass
class RedriveReport:
    """What a redrive did, by task id: redriven, already done by this request, refused (and
    why), not found. ``dry_run``: ``redriven`` lists what would be."""

    request_id: str
    redriven: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "redriven": self.redriven,
                "already": self.already, "refused": self.refused, "missing": self.missing,
                "dry_run": self.dry_run}


class StoreRedrive(StoreRetention):
    """Redrive over one namespace (a base of the ``TaskStore``)."""

    def redrive(self, *, ids: Sequence[str] | None = None, state: str | None = None,
                kind: str | None = None, dry_run: bool = False,
                request_id: str | None = None) -> RedriveReport:
        """Send ``ids``, or every task in ``state`` (``dead``, ``cancelled``, ``quarantined``;
        optionally of one ``kind``), to run again; see the module doc for what is refused."""
        if (ids is None) == (state is None):
            raise ValidationError("redrive takes task ids or a state (--state dead), not both")
        if state is not None and state not in REDRIVABLE:
            raise ValidationError(f"cannot redrive state {state!r}: only "
                                  f"{', '.join(REDRIVABLE)} tasks run again")
        if ids is not None:
            for task_id in ids:
                check_task_id(task_id)
        chosen = list(dict.fromkeys(ids)) if ids is not None else self._in_state(str(state),
                                                                                 kind)
        report = RedriveReport(request_id or os.urandom(8).hex(), dry_run=dry_run)
        for offset in range(0, len(chosen), REDRIVE_BATCH):
            self._redrive_batch(chosen[offset:offset + REDRIVE_BATCH], report)
        if report.redriven and not dry_run:
            log.warning("redrove %d finished tasks (request %s): they run again under their "
                        "own ids", len(report.redriven), report.request_id)
        return report

    def _in_state(self, state: str, kind: str | None) -> list[str]:
        key = self.keys.finished_index(state, kind)
        total = int(self.client.zcard(key))
        if total > MAX_REDRIVE:
            raise ValidationError(f"{total} {state} tasks; redrive at most {MAX_REDRIVE} per "
                                  "call (narrow it with --kind, or use --id)")
        return [as_text(x) for x in self.client.zrange(key, 0, -1)]

    def _redrive_batch(self, ids: list[str], report: RedriveReport) -> None:
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self.keys.task(task_id), ["state", "rec", "fin", "rdq", "tomb"])
        now = self.server_ms()
        args: list[Any] = [self.keys.prefix, self._audit, AUDIT_MAXLEN, report.request_id]
        sent: list[str] = []
        for task_id, (state, rec, fin, rdq, tomb) in zip(ids, pipe.execute(), strict=True):
            if state is None:
                report.missing.append(task_id)
                continue
            if rdq is not None and as_text(rdq) == report.request_id:
                report.already.append(task_id)
                continue
            was = as_text(state)
            refused = self._refusal(task_id, was, rec, fin, tomb, now)
            if refused is not None:
                report.refused[task_id] = refused
                continue
            if report.dry_run:
                report.redriven.append(task_id)
                continue
            opened = self.sealer.open(as_bytes(rec), RECORD)
            args += [task_id, was, as_bytes(rec), self.sealer.seal(RECORD, opened.body),
                     int(opened.body.get("priority", 0))]
            sent.append(task_id)
        if not sent:
            return
        k = self.keys
        reply = self._run("redrive", [k.counts, k.stats, k.audit, k.seq, k.wake], args)
        for task_id, verdict in zip(sent, reply, strict=True):
            outcome = as_text(verdict)
            if outcome == "ok":
                report.redriven.append(task_id)
            elif outcome == "already":
                report.already.append(task_id)
            else:
                report.refused[task_id] = "changed while it was being verified: run again"

    def _refusal(self, task_id: str, state: str, rec: Any, fin: Any, tomb: Any,
                 now_ms: int) -> str | None:
        """Why this task may not run again (None: it may)."""
        if tomb is not None:
            return "purged: its record and result are gone"
        if state not in REDRIVABLE:
            return f"it is {state}, not finished ({', '.join(REDRIVABLE)})"
        try:
            opened = self.sealer.open(as_bytes(rec or b""), RECORD)
        except IntegrityError as exc:
            return f"its record fails verification ({exc.reason}): it is never re-signed"
        body = opened.body
        if not isinstance(body, dict) or body.get("id") != task_id or (
                body.get("ns") != self.namespace):
            return "its record was signed for another task or namespace (copied_record)"
        if state == "quarantined":
            if self.outside_window(opened.iat, now_ms):
                return "its record was issued before the replay window (expired_record)"
            return None
        try:
            done = self.sealer.open(as_bytes(fin or b""), COMPLETION)
        except IntegrityError as exc:
            return f"its completion record fails verification ({exc.reason})"
        if not isinstance(done.body, dict) or done.body.get("id") != task_id:
            return "its completion record names another task (copied_record)"
        if self.outside_window(done.iat, now_ms):
            return "it finished before the replay window (a copied record?)"
        return None
