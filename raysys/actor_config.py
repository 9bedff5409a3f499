"""The configuration every actor of a deployment is started with (no secrets, ever).

An actor never receives a secret as an argument or through Ray's ``runtime_env`` (Ray records
both): it gets these non-secret settings overrides and reads everything else from its own
environment or, for the embedded default, from the data dir on its machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raysys.config import Settings, load_settings
from raysys.errors import ConfigurationError

# Settings that must never travel as actor arguments (Ray records them in its GCS and logs).
SECRET_SETTINGS = frozenset({"redis_url", "redis_password", "signing_keys", "api_token"})
DEFAULT_CONCURRENCY = 16  # leases a worker runs at once: sized for I/O-bound work
MAX_CONCURRENCY = 10_000
MAX_WORKERS = 1_000
Workers = int | str | tuple[int, int]


def pool_size(workers: Workers) -> tuple[int, int]:
    """(MIN, MAX) workers from N, (MIN, MAX) or "MIN:MAX"; ConfigurationError if malformed."""
    if isinstance(workers, tuple) and len(workers) == 2:
        low, high = workers
    elif isinstance(workers, int) and not isinstance(workers, bool):
        low = high = workers
    elif isinstance(workers, str):
        low_text, sep, high_text = workers.partition(":")
        try:
            low = int(low_text)
            high = int(high_text) if sep else low
        except ValueError:
            raise ConfigurationError(f"workers {workers!r} is not N or MIN:MAX") from None
    else:
        raise ConfigurationError(f"workers {workers!r} is not N or MIN:MAX")
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= MAX_WORKERS):
        raise ConfigurationError(f"workers {workers!r}: need 0 <= MIN <= MAX <= {MAX_WORKERS}")
    return low, high


@dataclass(frozen=True)
class ActorConfig:
    """Non-secret configuration shared by the actors (picklable, small).

    ``batch``: leases per assignment at most. ``concurrency``: leases a worker runs at once.
    ``min_workers``/``max_workers``: the pool the Coordinator keeps (equal: a fixed pool).
    """

    namespace: str
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings field -> value
    batch: int = 50
    concurrency: int = DEFAULT_CONCURRENCY
    min_workers: int = 2
    max_workers: int = 2
    ledger: bool = False  # record acknowledged commits in the CommitLedger (demo, tests)
    scale_down_idle_s: float = 30.0  # an autoscaled pool removes a worker idle this long
    max_prefetch: int = 1000  # leases a worker holds queued beyond its slots, at most
    worker_prefix: str = "worker"  # WORKER_ID: worker ids are <namespace>-<prefix>-<n>
    # The ledger's own Redis (benchmarks that measure the store's memory; no credentials):
    # None keeps it beside the store, outside the raysys keys.
    ledger_url: str | None = None

    @property
    def capacity(self) -> int:
        """The most leases one worker may hold at once (running and queued)."""
        return self.concurrency + self.max_prefetch

    def __post_init__(self) -> None:
        secret = SECRET_SETTINGS.intersection(self.overrides)
        if secret:
            raise ConfigurationError(
                f"{', '.join(sorted(secret))} must reach actors through their environment or a "
                "file, never as an actor argument")
        if self.batch < 1:
            raise ConfigurationError("actor batch must be >= 1")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigurationError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, not "
                                     f"{self.concurrency}")
        if self.ledger_url is not None and "@" in self.ledger_url:
            raise ConfigurationError("ledger_url must not carry credentials (actors receive it "
                                     "as an argument)")
        if self.max_prefetch < 0:
            raise ConfigurationError("max_prefetch must be >= 0")
        if not self.scale_down_idle_s > 0:
            raise ConfigurationError("scale_down_idle_s must be above 0")
        if not 0 <= self.min_workers <= self.max_workers <= MAX_WORKERS:
            raise ConfigurationError(f"workers MIN:MAX needs 0 <= MIN <= MAX <= {MAX_WORKERS}, "
                                     f"not {self.min_workers}:{self.max_workers}")

    @classmethod
    def build(cls, namespace: str, overrides: dict[str, Any], *, workers: Workers = 2,
              batch: int = 50, concurrency: int = DEFAULT_CONCURRENCY, ledger: bool = False,
              scale_down_idle_s: float = 30.0, max_prefetch: int = 1000,
              worker_prefix: str = "worker", ledger_url: str | None = None) -> ActorConfig:
        """A config for a pool of ``workers`` (N, (MIN, MAX) or "MIN:MAX")."""
        low, high = pool_size(workers)
        return cls(namespace, overrides, batch=batch, concurrency=concurrency,
                   min_workers=low, max_workers=high, ledger=ledger,
                   scale_down_idle_s=scale_down_idle_s, max_prefetch=max_prefetch,
                   worker_prefix=worker_prefix, ledger_url=ledger_url)

    def worker_id(self, index: int) -> str:
        """The lease holder id of worker ``index`` (stable across restarts)."""
        return f"{self.namespace}-{self.worker_prefix}-{index}"

    def worker_index(self, worker_id: str) -> int | None:
        """The index in a worker id of this deployment; None for anything else."""
        head = f"{self.namespace}-{self.worker_prefix}-"
        tail = worker_id[len(head):]
        return int(tail) if worker_id.startswith(head) and tail.isdigit() else None

    @property
    def autoscaled(self) -> bool:
        return self.max_workers > self.min_workers

    def settings(self) -> Settings:
        return load_settings(**{**self.overrides, "namespace": self.namespace})
