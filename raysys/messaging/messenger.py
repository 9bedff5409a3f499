"""Signed messages between actors: short validity, a nonce, and replay protection in Redis.

A message is a signed envelope (purpose ``message``) that adds ``ns``, ``sender``,
``recipient``, ``type`` and ``exp`` (expiry, ms since the epoch). :meth:`Messenger.open_many`
accepts a message only if its signature verifies, it belongs to this namespace and is
addressed to this party, it has not expired by Redis server time (allowing ``skew_s``) nor
claims a validity longer than ``MAX_VALIDITY_S``, and its (key id, nonce) was never seen. The
seen-nonce records live in Redis under the namespace with an expiry just past the message's,
so they survive a Redis restart (AOF) and a replay is rejected before and after one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from raysys.errors import IntegrityError, ValidationError
from raysys.signing.envelope import Sealer
from raysys.store.histograms import MESSAGE_LATENCY, bucket
from raysys.store.records import AUDIT_MAXLEN

if TYPE_CHECKING:
    from raysys.core import Core

log = logging.getLogger(__name__)

MESSAGE = "message"
DEFAULT_VALIDITY_S = 30.0
DEFAULT_SKEW_S = 5.0
MAX_VALIDITY_S = 3600.0
# Rejections that count as signature failures (the others: replay, expiry, misaddressing).
SIGNATURE_REASONS = frozenset({"bad_signature", "unknown_key", "revoked_key",
                               "algorithm_mismatch", "header_mismatch", "malformed"})


@dataclass(frozen=True, slots=True)
class Message:
    """A verified, first-seen, unexpired message addressed to us."""

    sender: str
    recipient: str
    type: str
    body: Any
    kid: str
    nonce: str
    issued_at: float
    expires_ms: int


class Messenger:
    """Seals messages from ``party`` and opens messages addressed to it."""

    def __init__(self, core: Core, party: str, *, validity_s: float = DEFAULT_VALIDITY_S,
                 skew_s: float = DEFAULT_SKEW_S) -> None:
        if not 0 < validity_s <= MAX_VALIDITY_S:
            raise ValidationError(f"message validity must be in (0, {MAX_VALIDITY_S:g}] s")
        self.party = party
        self.sealer: Sealer = core.sealer
        self.validity_s = validity_s
        self.skew_ms = int(skew_s * 1000)
        self._prefix = core.keys.prefix
        self._stats = core.keys.stats
        self._histograms = core.keys.histograms
        self._audit = core.keys.audit
        self._client = core.client
        self.namespace = core.namespace
        self._scripts = core.scripts
        self._pending: dict[tuple[str, str], int] = {}  # (hash key, field) -> increment
        self._pending_latency = 0.0
        self._pending_lock = threading.Lock()

    def seal(self, recipient: str, type_: str, body: object) -> bytes:
        expires_ms = int((time.time() + self.validity_s) * 1000)
        data = self.sealer.seal(MESSAGE, body, extra={
            "ns": self.namespace, "sender": self.party, "recipient": recipient, "type": type_,
            "exp": expires_ms})
        log.debug("message sent %s -> %s type=%s bytes=%d", self.party, recipient, type_,
                  len(data))
        return data

    def open(self, data: bytes) -> Message:
        """Accept one message or raise IntegrityError (reason: bad_signature, replay, ...)."""
        result = self.open_many([data])[0]
        if isinstance(result, IntegrityError):
            raise result
        return result

    def open_many(self, items: Sequence[bytes]) -> list[Message | IntegrityError]:
        """Verify a batch; claim all nonces in one Redis call. Order follows ``items``."""
        results: list[Message | IntegrityError] = []
        claims: list[Any] = [self._prefix, self.skew_ms, int(MAX_VALIDITY_S * 1000),
                             os.urandom(8).hex()]  # one request id: a resend is no replay
        pending: list[int] = []
        for index, data in enumerate(items):
            try:
                message = self._verify(data)
            except IntegrityError as exc:
                results.append(exc)
                continue
            results.append(message)
            claims += [f"{message.kid}:{message.nonce}", message.expires_ms]
            pending.append(index)
        if pending:
            verdicts = self._scripts.run("claim_nonces", [self._stats], claims)
            for index, verdict in zip(pending, verdicts, strict=True):
                if int(verdict) == 0:
                    results[index] = IntegrityError("message replayed: its nonce was seen before",
                                                    reason="replay")
                elif int(verdict) < 0:
                    results[index] = IntegrityError("message expired", reason="expired")
        self._account(results)
        return results

    def _account(self, results: Sequence[Message | IntegrityError]) -> None:
        """Log each message received and count it in the namespace's metrics.

        Accepted messages are tallied in memory and written by :meth:`flush_metrics` (the
        receiver calls it off its delivery path, e.g. between batches); a rejection is
        counted and audited at once, with whatever was pending.
        """
        now = time.time()
        rejections = []
        with self._pending_lock:
            for result in results:
                if isinstance(result, Message):
                    latency = max(now - result.issued_at, 0.0)
                    log.debug("message received %s <- %s type=%s nonce=%s latency_ms=%.2f",
                              self.party, result.sender, result.type, result.nonce,
                              latency * 1000)
                    pending = self._pending
                    for counter in ((self._stats, f"messages:{result.type}:accepted"),
                                    (self._histograms, f"{MESSAGE_LATENCY}:{bucket(latency)}"),
                                    (self._histograms, f"{MESSAGE_LATENCY}:count")):
                        pending[counter] = pending.get(counter, 0) + 1
                    self._pending_latency += latency
                else:
                    rejections.append(result)
        if rejections:
            self.flush_metrics(rejections)

    def flush_metrics(self, rejections: Sequence[IntegrityError] = ()) -> None:
        """Write the tallied message metrics (and audit ``rejections``) in one round trip.

        A failed write is logged and the tallies are kept for the next flush (metrics never cost
        a message; a write cut off half way may count a few twice: metrics, not task state).
        """
        with self._pending_lock:
            pending, latency = self._pending, self._pending_latency
            self._pending, self._pending_latency = {}, 0.0
        if not pending and not rejections:
            return
        pipe = self._client.pipeline(transaction=False)
        for (key, field), n in pending.items():
            pipe.hincrby(key, field, n)
        if latency:
            pipe.hincrbyfloat(self._histograms, f"{MESSAGE_LATENCY}:sum", latency)
        for result in rejections:
            log.warning("%s rejected a message: %s (%s)", self.party, result, result.reason)
            pipe.hincrby(self._stats, "messages:unknown:rejected", 1)
            if result.reason in SIGNATURE_REASONS:
                pipe.hincrby(self._stats, "signature_failures", 1)
            pipe.xadd(self._audit, {"ev": "message_rejected", "party": self.party,
                                    "reason": result.reason, "error": str(result)[:200]},
                      maxlen=AUDIT_MAXLEN, approximate=True)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:  # metrics must never cost a message
            log.warning("could not record message metrics: %s", exc)
            with self._pending_lock:  # keep the tallies (a rejection's audit is not retried)
                for counter, n in pending.items():
                    self._pending[counter] = self._pending.get(counter, 0) + n
                self._pending_latency += latency

    def _verify(self, data: bytes) -> Message:
        opened = self.sealer.open(data, MESSAGE)
        extra = opened.extra
        try:
            sender, recipient = str(extra["sender"]), str(extra["recipient"])
            type_, expires_ms = str(extra["type"]), int(extra["exp"])
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("message lacks sender, recipient, type or expiry",
                                 reason="malformed") from None
        if extra.get("ns") != self.namespace:
            raise IntegrityError(f"message for namespace {extra.get('ns')!r} delivered in "
                                 f"{self.namespace!r}", reason="wrong_namespace")
        if recipient != self.party:
            raise IntegrityError(f"message for {recipient!r} delivered to {self.party!r}",
                                 reason="wrong_recipient")
        if not opened.nonce:
            raise IntegrityError("message has no nonce", reason="malformed")
        return Message(sender, recipient, type_, opened.body, opened.kid, opened.nonce,
                       opened.iat, expires_ms)
