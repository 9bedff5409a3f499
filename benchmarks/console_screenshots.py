"""Screenshots of the web console for the docs: ``docs/console-overview.png`` and
``docs/console-task.png``.

Runs raysys on this machine (``raysys.start``: Ray, the actors, the embedded Redis) with the
HTTP app, offers a varying load for ``--seconds`` (so the overview's charts have a shape) with
tasks in several states (succeeded, dead, failed and retrying, scheduled, cancelled, running,
pending), redrives a dead task through the API (so its page shows two rounds of attempts and the
audit entry naming the token), then opens the console in Debian's headless Chromium, logs in and
saves the two pages. Selenium is given chromedriver's path (Selenium Manager downloads nothing).

Needs ``apt-get install chromium chromium-driver`` and ``pip install -e .[dev]`` (selenium).

Usage: python benchmarks/console_screenshots.py [--out docs] [--seconds 100] [--port 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

TOKEN_KEY = "raysys.console.token"  # where console.js keeps the token (sessionStorage)
WIDTH = 1280


def http(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_system(port: int) -> tuple[Any, str]:
    """raysys with two workers, and the app (with the Ray dashboard's address) on ``port``."""
    import raysys
    from raysys.redis_server.binary import free_port

    data = Path(tempfile.mkdtemp(prefix="raysys-shots-"))
    client = raysys.start(2, concurrency=4, data_dir=data, namespace="console-demo")
    url = client.serve("127.0.0.1", port or free_port())
    if url is None:
        raise SystemExit(f"port {port} is taken: pass another --port")
    wait_for(lambda: healthy(url), 90, "the app's /health")
    return client, url


def offer_load(client: Any, seconds: float) -> None:
    """Short sleeps at a rate that rises and falls, with a few failures along the way."""
    began = time.monotonic()
    rng = random.Random(7)
    while (elapsed := time.monotonic() - began) < seconds:
        phase = elapsed / seconds
        rate = int(10 + 30 * (1 - abs(2 * phase - 1)))  # 10/s, up to 40/s mid-run, back down
        client.submit_many("sleep", [{"seconds": rng.uniform(0.02, 0.15)}
                                     for _ in range(rate)])
        if rng.random() < 0.2:
            client.submit("fail", {"message": "upstream answered 502"}, max_attempts=1)
        time.sleep(1.0)


def other_states(client: Any) -> None:
    """A task in each remaining state: scheduled, retrying, cancelled, running and pending."""
    client.submit("noop", delay_s=3600)
    client.submit("fail", {"message": "timeout talking to the ledger"}, max_attempts=20)
    client.cancel(client.submit("sleep", {"seconds": 600}, delay_s=600))
    client.submit_many("sleep", [{"seconds": 30}] * 8)  # every slot busy ...
    time.sleep(1.0)
    client.submit_many("noop", [None] * 300)  # ... so these wait


def redriven_dead_task(client: Any, url: str, token: str) -> str:
    """A task that failed three attempts, was redriven over the API, and failed three more."""
    task_id = client.submit("fail", {"message": "card declined: insufficient funds"},
                            max_attempts=3)
    client.wait([task_id], timeout=120)
    http("POST", url + "/tasks/redrive", token, {"ids": [task_id]})
    wait_for(lambda: client.status(task_id).state.value == "dead"
             and client.status(task_id).attempts == 3, 120, "the redriven task to die again")
    return task_id


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SystemExit("needs Debian's chromium and chromedriver: "
                         "apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},900", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def shoot(driver: Any, page: str, ready_css: str, out: Path) -> None:
    """Open ``#page``, wait for ``ready_css`` and a refresh, save the whole page to ``out``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(driver.current_url.split("#")[0] + "#" + page)
    WebDriverWait(driver, 30).until(shown.presence_of_element_located((By.CSS_SELECTOR,
                                                                       ready_css)))
    time.sleep(2.5)
    height, inner, outer = driver.execute_script(
        "return [document.documentElement.scrollHeight, innerHeight, outerHeight]")
    driver.set_window_size(WIDTH, max(600, int(height)) + int(outer) - int(inner))
    time.sleep(0.5)
    driver.save_screenshot(str(out))
    print(f"saved {out}", file=sys.stderr)


def screenshots(url: str, token: str, task_id: str, out: Path) -> None:
    driver = browser()
    try:
        driver.get(url + "/ui/")
        driver.execute_script(f"sessionStorage.setItem('{TOKEN_KEY}', arguments[0])", token)
        driver.get(url + "/ui/#/")
        shoot(driver, "/", "[data-test=workers-table]", out / "console-overview.png")
        driver.set_window_size(WIDTH, 900)
        shoot(driver, f"/task/{task_id}", "[data-test=audit-table]", out / "console-task.png")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seconds", type=float, default=100.0, help="length of the load")
    parser.add_argument("--port", type=int, default=0, help="the app's port (0: a free one)")
    args = parser.parse_args()
    # The token must be in the environment before Ray starts: the app's replica inherits it.
    token = os.environ.setdefault("RAYSYS_API_TOKEN", secrets.token_hex(24))
    client, url = start_system(args.port)
    try:
        http("POST", url + "/schedules", token, {"name": "nightly-report", "cron": "0 3 * * *",
                                                 "kind": "noop", "tz": "Europe/Paris"})
        http("POST", url + "/schedules/nightly-report/pause", token)
        offer_load(client, args.seconds)
        # after the load: a task's page shows the audit entries among the newest 1000
        task_id = redriven_dead_task(client, url, token)
        other_states(client)
        args.out.mkdir(parents=True, exist_ok=True)
        screenshots(url, token, task_id, args.out)
    finally:
        client.shutdown()


if __name__ == "__main__":
    main()
