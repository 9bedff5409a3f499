"""Store factories over the real Redis servers of tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import RetryPolicy, TaskStore
from tests.support.stores import store_over

StoreFactory = Callable[..., TaskStore]


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(Keyring([generate_key()]))


@pytest.fixture
def make_store(redis_client: redis.Redis, sealer: Sealer) -> StoreFactory:
    """Build stores on the session's Redis: a fresh namespace each, fast retries by default."""

    def factory(**options: Any) -> TaskStore:
        options.setdefault("retry", RetryPolicy(base_s=0.001, cap_s=0.002))
        namespace = options.pop("namespace", "t" + uuid.uuid4().hex[:10])
        client = options.pop("client", redis_client)
        return store_over(client, options.pop("sealer", sealer), namespace, **options)

    return factory


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store()
