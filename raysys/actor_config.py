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


@dataclass(frozen=True)
class ActorConfig:
    """Non-secret configuration shared by the three actors (picklable, small)."""

    namespace: str
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings field -> value
    batch: int = 50  # leases per assignment
    capacity: int = 100  # leases a worker may hold (queued + running)
    ledger: bool = False  # record acknowledged commits in the CommitLedger (demo, tests)

    def __post_init__(self) -> None:
        secret = SECRET_SETTINGS.intersection(self.overrides)
        if secret:
            raise ConfigurationError(
                f"{', '.join(sorted(secret))} must reach actors through their environment or a "
                "file, never as an actor argument")
        if self.batch < 1 or self.capacity < self.batch:
            raise ConfigurationError("actor batch must be >= 1 and capacity >= batch")

    def settings(self) -> Settings:
        return load_settings(**{**self.overrides, "namespace": self.namespace})
