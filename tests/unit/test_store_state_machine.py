"""A hypothesis state machine over the real store: random interleavings of submit, acquire,
renew, expire (server-side deadline moved into the past, then the reaper), complete and fail.

Invariants after every step:
* at most one lease per task is valid (only the newest fence of a leased task can commit);
* fences handed out strictly increase;
* a final state never changes, and each task is committed final at most once;
* the per-state counts agree with the tasks' own states and add up to the tasks submitted.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raysys.models import FINAL_STATES, Lease, Outcome, TaskSpec, TaskState
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import Keyring, generate_key
from raysys.store import RetryPolicy
from tests.support.stores import store_over

pytestmark = pytest.mark.unit


class StoreMachine(RuleBasedStateMachine):
    """Rules and invariants over one fresh namespace per run; :func:`make_machine` binds it to
    a client and a key."""

    client: ClassVar[redis.Redis]
    sealer: ClassVar[Sealer]

    def __init__(self) -> None:
        super().__init__()
        self.store = store_over(self.client, self.sealer, "sm" + uuid.uuid4().hex[:10],
                                retry=RetryPolicy(base_s=0.0, cap_s=0.0, jitter=0.0))
        self.ids: list[str] = []
        self.leases: list[Lease] = []  # every lease ever granted (stale ones included)
        self.max_fence = 0
        self.final_seen: dict[str, tuple[str, object]] = {}
        self.final_commits: dict[str, int] = {}

    # ---- rules ----------------------------------------------------------------------------------
    @rule(n=st.integers(1, 4), priority=st.integers(-2, 2), attempts=st.integers(1, 3))
    def submit(self, n: int, priority: int, attempts: int) -> None:
        specs = [TaskSpec.build(kind="echo", payload=len(self.ids) + i, priority=priority,
                                max_attempts=attempts) for i in range(n)]
        self.ids += self.store.submit_many(specs)

    @rule(holder=st.sampled_from(["a", "b", "c"]), n=st.integers(1, 5))
    def acquire(self, holder: str, n: int) -> None:
        granted = self.store.acquire(holder, n, 60)
        fences = [lease.fence for lease in granted]
        assert fences == sorted(fences) and len(set(fences)) == len(fences)
        if fences:
            assert fences[0] > self.max_fence, "fences went backwards"
            self.max_fence = fences[-1]
        self.leases += granted

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        holder = self._holder(lease)
        deadline = self.store.renew(holder, [(lease.task_id, lease.fence)], 60)[lease.task_id]
        assert (deadline > 0) == self._is_current(lease)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """Time passes for one lease: its server-side deadline moves into the past."""
        lease = data.draw(st.sampled_from(self.leases))
        if self._is_current(lease):
            self.store.client.zadd(self.store.keys.leases, {lease.task_id: 1})
        self.store.reap()

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), ok=st.booleans(), retryable=st.booleans())
    def finish(self, data: st.DataObject, ok: bool, retryable: bool) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        current = self._is_current(lease)
        outcome = Outcome(ok=True, result=lease.payload) if ok else Outcome(
            ok=False, error="x", retryable=retryable)
        final = ok or not retryable or lease.attempt >= lease.max_attempts
        repeat = self._already_applied(lease, "succeeded" if ok else (
            "dead" if final else "failed"))
        (accepted,) = self.store.complete(self._holder(lease), [(lease, outcome)])
        assert accepted == (current or repeat), "only the current fence may commit"
        if current and final:
            self.final_commits[lease.task_id] = self.final_commits.get(lease.task_id, 0) + 1

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.ids))
        before = self.store.cancel(task_id)
        if before not in FINAL_STATES:
            self.final_commits[task_id] = self.final_commits.get(task_id, 0) + 1

    # ---- what the store says ---------------------------------------------------------------------
    def _holder(self, lease: Lease) -> str:
        return self.store.status(lease.task_id).holder or "gone"

    def _is_current(self, lease: Lease) -> bool:
        status = self.store.status(lease.task_id)
        return status.state == TaskState.LEASED and status.fence == lease.fence

    def _already_applied(self, lease: Lease, state: str) -> bool:
        """The same outcome under the same fence, already applied (a resent call): it is
        acknowledged again without a second commit. A reaper's verdict is no commit to
        acknowledge."""
        status = self.store.status(lease.task_id)
        reaped = self.store.client.hget(self.store.keys.task(lease.task_id), "reaped")
        return status.fence == lease.fence and status.state.value == state and reaped is None

    # ---- invariants ------------------------------------------------------------------------------
    @invariant()
    def at_most_one_valid_lease_per_task(self) -> None:
        valid: dict[str, int] = {}
        for lease in self.leases:
            if self._is_current(lease):
                valid[lease.task_id] = valid.get(lease.task_id, 0) + 1
        assert all(n == 1 for n in valid.values())

    @invariant()
    def final_states_never_change(self) -> None:
        for task_id in self.ids:
            status = self.store.status(task_id)
            if task_id in self.final_seen:
                assert (status.state.value, status.result) == self.final_seen[task_id]
            elif status.state in FINAL_STATES:
                self.final_seen[task_id] = (status.state.value, status.result)
        assert all(n == 1 for n in self.final_commits.values()), self.final_commits

    @invariant()
    def counts_agree_with_states(self) -> None:
        counts = self.store.counts()
        assert sum(counts.values()) == len(set(self.ids))
        actual: dict[str, int] = {}
        for task_id in set(self.ids):
            state = self.store.status(task_id).state.value
            actual[state] = actual.get(state, 0) + 1
        assert {k: v for k, v in counts.items() if v} == actual


def make_machine(client: redis.Redis) -> type[RuleBasedStateMachine]:
    """:class:`StoreMachine` on ``client``, signing with a key of its own."""
    return type("StoreMachineOnClient", (StoreMachine,),
                {"client": client, "sealer": Sealer(Keyring([generate_key()]))})


def test_store_state_machine(redis_client: redis.Redis) -> None:
    machine = make_machine(redis_client)
    machine.TestCase.settings = settings(
        max_examples=60, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    machine.TestCase().runTest()
