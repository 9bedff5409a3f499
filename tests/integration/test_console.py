"""The web console (``/ui``) in a real headless Chromium, against the app on a local cluster.

An operator's path: log in with the token (a wrong one is refused, and a token the server later
refuses sends the tab back to the login), watch the overview's counts move during a run, list
tasks by state and kind page by page, redrive a dead task from its page once it is fixed, cancel
a running one, redrive every dead task of a kind after confirming, pause and resume a schedule.
Actions are audited with the token's id and the caller's address.

One deployment and one browser for the module (the Serve app is one per cluster). Chromium and
chromedriver are Debian's (``apt-get install chromium chromium-driver``; ``.ci/run`` installs
them): missing, the tests fail under ``CI=true`` and skip elsewhere. Selenium Manager never
runs: the driver's path is given.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import raysys
from raysys.client import Client
from raysys.models import TaskState
from raysys.redis_server.attach import attach_or_start
from raysys.store.keyspace import Keyspace, drop_keys
from tests.support.console_browser import Console, chromium_paths, open_console
from tests.support.http import get, request
from tests.support.polling import wait_until
from tests.support.stores import flip_record_bit

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser,
              pytest.mark.timeout(180)]
HOST = "127.0.0.1"
HANDLERS = "tests.support.console_handlers"
UI_WAIT_S = 20  # the page refreshes every 2 s; an action shows within a few refreshes


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    return chromium_paths()


@pytest.fixture(scope="module")
def system(browser_paths: tuple[str, str], ray_cluster: None, data_dir: Path,
           http_port: int) -> Iterator[tuple[Client, str]]:
    """One worker with two slots (a run of short tasks lasts a few refreshes), served."""
    client = raysys.start(1, concurrency=2, data_dir=data_dir, handlers=HANDLERS,
                          namespace=f"ui-{uuid.uuid4().hex[:10]}")
    try:
        url = client.serve(HOST, http_port)
        assert url is not None
        wait_until(lambda: get(url + "/health")[0] == 200, 60, "the app to answer /health",
                   interval=0.2)
        yield client, url
    finally:
        client.shutdown()
        redis_url, _ = attach_or_start(data_dir)
        with redis.Redis.from_url(redis_url) as conn:
            drop_keys(conn, Keyspace(client.namespace).pattern())


@pytest.fixture(scope="module")
def console(browser_paths: tuple[str, str], system: tuple[Client, str],
            api_token: str) -> Iterator[Console]:
    with open_console(*browser_paths, system[1], api_token) as ui:
        yield ui


@pytest.fixture
def client(system: tuple[Client, str]) -> Client:
    return system[0]


def fixable(client: Client, marker: Path, n: int = 1) -> list[str]:
    """``n`` tasks that die (one attempt) until ``marker`` exists."""
    ids = [client.submit("fixable", {"fixed_if": str(marker)}, max_attempts=1)
           for _ in range(n)]
    assert {s.state for s in client.wait(ids, timeout=60)} == {TaskState.DEAD}
    return ids


def by_token(api_token: str) -> str:
    return f"token {hashlib.sha256(api_token.encode()).hexdigest()[:12]} from "


def test_login_refuses_a_wrong_token_and_a_401_sends_back_to_it(console: Console) -> None:
    # a wrong token is refused at the form, with the server's reason
    console.log_out()
    console.log_in("x" * 40)
    console.wait_text("login-message", lambda t: "refused" in t and "401" in t)
    assert not console.shown("overview")
    # the right one opens the overview, naming the namespace
    console.log_in(console.token)
    console.wait_shown("overview")
    console.wait_text("namespace", lambda t: t.startswith("namespace ui-"))
    # a token the server refuses later (here: replaced behind the page's back) logs out
    console.driver.execute_script(
        "sessionStorage.setItem('raysys.console.token', 'y'.repeat(40))")
    console.driver.refresh()
    console.wait_text("login-message", lambda t: "refused the token" in t)
    console.log_in(console.token)
    console.wait_shown("overview")
    assert console.csp_violations() == []


def test_overview_counts_move_while_a_run_progresses(console: Console, client: Client) -> None:
    # given the overview, and a run of 300 short tasks on two slots (several seconds)
    console.go("/")
    before = int(console.wait_text("count-value-succeeded", str.isdigit))
    ids = client.submit_many("sleep", [{"seconds": 0.05}] * 300)
    # when it runs, then the succeeded count is seen to move, to the end
    seen = {before}
    done = before + len(ids)

    def moved() -> bool:
        text = console.text("count-value-succeeded")
        if text and text.isdigit():
            seen.add(int(text))
        return done in seen

    wait_until(moved, 90, "the overview to count the whole run", interval=0.3)
    assert len(seen) >= 3, f"the count did not move during the run: {sorted(seen)}"
    # ... beside the rest of the overview
    assert console.text("health-status") in ("healthy", "degraded")
    assert "up" in console.text("actor-coordinator")
    assert "up" in console.text("actor-distributor")
    assert console.text("live-workers") == "1"
    assert "B" in console.text("redis-memory-text")
    assert console.text("dashboard-link") == "not linked"  # the suite's cluster has none
    rows = console.rows("workers-table")
    assert len(rows) == 1 and "alive" in rows[0]
    for chart in ("chart-throughput", "chart-wait"):
        assert console.find(chart).find_elements("css selector", "svg")


def test_tasks_filter_by_state_and_kind_page_by_page(console: Console, client: Client) -> None:
    # given 60 finished echo tasks
    client.wait(client.submit_many("echo", [{"n": i} for i in range(60)]), timeout=60)
    # when the operator filters by state and kind
    console.go("/tasks")
    console.select("filter-state", "succeeded")
    console.type_into("filter-kind", "echo")
    console.click("filter-apply")
    # then a page of 50, then the last 10, then back to the first
    wait_until(lambda: len(console.rows("tasks-table")) == 50, UI_WAIT_S, "a page of 50")
    assert all("echo" in row and "succeeded" in row for row in console.rows("tasks-table"))
    first = console.rows("tasks-table")[0]
    console.click("page-next")
    wait_until(lambda: len(console.rows("tasks-table")) == 10, UI_WAIT_S, "the last 10")
    assert console.find("page-next").get_attribute("disabled") is not None
    console.click("page-first")
    wait_until(lambda: console.rows("tasks-table")[:1] == [first], UI_WAIT_S, "the first page")
    # ... and a row leads to its task
    console.find("tasks-table").find_element("css selector", "[data-test=task-link]").click()
    console.wait_text("task-state", lambda t: t == "succeeded")


def test_a_dead_task_redriven_from_its_page_succeeds(console: Console, client: Client,
                                                     tmp_path: Path, api_token: str) -> None:
    # given a task that died because it was not fixed yet
    marker = tmp_path / "fixed"
    (task_id,) = fixable(client, marker)
    console.go(f"/task/{task_id}")
    console.wait_text("task-state", lambda t: t == "dead")
    assert "not fixed yet" in console.text("task-error")
    assert not console.shown("task-cancel")
    # when it is fixed and the operator redrives it
    marker.touch()
    console.click("task-redrive")
    # then the page says so and shows it succeed, its new attempt, and who redrove it
    console.wait_text("action-message", lambda t: t.startswith("Redriven"))
    console.wait_text("task-state", lambda t: t == "succeeded")
    assert '"fixed": true' in console.text("task-result")
    events = [row.split()[0] for row in console.rows("history-table")]
    assert events == ["dead", "redriven", "succeeded"], events
    wait_until(lambda: any(by_token(api_token) in row and "api_redrive" in row
                           for row in console.rows("audit-table")), UI_WAIT_S,
               "the redrive audited with the token's id")


def test_task_data_is_shown_as_text_never_as_markup(console: Console, client: Client) -> None:
    # given a task whose error carries markup
    task_id = client.submit("fail", {"message": "<img src=x id=injected>"}, max_attempts=1)
    client.wait([task_id], timeout=60)
    # when its page and the list show it, then the markup is text, and no element was made
    console.go(f"/task/{task_id}")
    console.wait_text("task-error", lambda t: "<img src=x id=injected>" in t)
    console.go("/tasks?state=dead&kind=fail")
    wait_until(lambda: any("<img src=x" in row for row in console.rows("tasks-table")),
               UI_WAIT_S, "the row with the error as text")
    assert console.driver.execute_script("return document.getElementById('injected')") is None


def test_a_running_task_cancelled_from_its_page(console: Console, client: Client,
                                                api_token: str, system: tuple[Client, str]
                                                ) -> None:
    # given a task that runs for a minute
    task_id = client.submit("sleep", {"seconds": 60})
    wait_until(lambda: client.status(task_id).state == TaskState.LEASED, 30, "it to start")
    console.go(f"/task/{task_id}")
    console.wait_text("task-state", lambda t: t == "leased")
    assert not console.shown("task-redrive")
    # when the operator cancels it
    console.click("task-cancel")
    # then it is cancelled at once, the buttons follow, and the audit names who asked
    console.wait_text("action-message", lambda t: "Cancelled (it was leased)" in t)
    console.wait_text("task-state", lambda t: t == "cancelled")
    wait_until(lambda: console.shown("task-redrive") and not console.shown("task-cancel"),
               UI_WAIT_S, "Redrive offered instead of Cancel")
    wait_until(lambda: any(by_token(api_token) in row and "api_cancel" in row
                           for row in console.rows("audit-table")), UI_WAIT_S,
               "the cancel audited with the token's id")
    status, doc = get(f"{system[1]}/tasks/{task_id}/history", token=api_token)
    assert status == 200
    assert any(e.get("ev") == "api_cancel" and e["by"].startswith(by_token(api_token))
               for e in doc["audit"]), doc["audit"]


def test_a_task_whose_record_fails_verification_says_so_on_its_page(
        console: Console, client: Client, data_dir: Path) -> None:
    # given: a task due in an hour whose stored signed record was changed by one bit
    task_id = client.submit("echo", "pay me", delay_s=3600)
    with redis.Redis.from_url(attach_or_start(data_dir)[0]) as conn:
        flip_record_bit(conn, client.namespace, task_id)
    # when: the operator opens its page
    console.go(f"/task/{task_id}")
    # then: the page says it failed verification, and why
    console.wait_text("task-integrity",
                      lambda t: t == "failed verification: bad_signature (task record)")


def test_redrive_all_dead_of_a_kind_after_confirming(console: Console, client: Client,
                                                     tmp_path: Path) -> None:
    # given three dead tasks of kind fixable, then fixed
    marker = tmp_path / "fixed"
    ids = fixable(client, marker, 3)
    marker.touch()
    console.go("/tasks?state=dead&kind=fixable")
    wait_until(lambda: len(console.rows("tasks-table")) == 3, UI_WAIT_S, "the 3 dead tasks")
    # when the operator asks, then declines: nothing changes
    console.click("redrive-all")
    console.wait_text("redrive-confirm", lambda t: t.startswith("3 dead tasks of kind fixable"))
    console.click("redrive-confirm-no")
    console.wait_shown("redrive-all")
    assert {s.state for s in client.statuses(ids) if s} == {TaskState.DEAD}
    # when the operator asks again and confirms: all three run again and succeed
    console.click("redrive-all")
    console.click("redrive-confirm-yes")
    console.wait_text("redrive-result", lambda t: t == "Redriven: 3.")
    assert {s.state for s in client.wait(ids, timeout=60)} == {TaskState.SUCCEEDED}


def test_schedules_pause_and_resume(console: Console, system: tuple[Client, str],
                                    api_token: str) -> None:
    url = system[1]
    name = f"ui-{uuid.uuid4().hex[:6]}"
    status, doc = request("POST", url + "/schedules", token=api_token,
                          body={"name": name, "cron": "0 3 * * *", "kind": "noop"})
    assert status == 201, doc
    console.go("/schedules")
    console.wait_text(f"state-{name}", lambda t: t == "active")
    console.click(f"pause-{name}")
    console.wait_text(f"state-{name}", lambda t: t == "paused")
    console.click(f"resume-{name}")
    console.wait_text(f"state-{name}", lambda t: t == "active")
    assert request("DELETE", f"{url}/schedules/{name}", token=api_token)[0] == 200
