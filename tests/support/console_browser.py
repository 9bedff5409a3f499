"""The web console in a headless Chromium, driven the way an operator uses it.

- :func:`chromium_paths`: Debian's ``chromium`` and ``chromedriver`` (and Selenium), or
  :func:`~tests.support.prerequisites.unavailable` (fails under ``CI=true``, skips elsewhere).
- :func:`open_console`: a browser on ``<url>/ui/``, logged in; closed at the end of the block.
- :class:`Console`: what a test does on the page, by the elements' ``data-test`` names; every
  read finds the element afresh (the page redraws its parts every refresh) and waits politely.

Selenium Manager never runs: the driver's path is given, so nothing is downloaded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.polling import wait_until
from tests.support.prerequisites import unavailable

TOKEN_KEY = "raysys.console.token"  # where console.js keeps the token (sessionStorage)
HOW = "apt-get install chromium chromium-driver (Debian), pip install selenium"
WAIT_S = 20.0
POLL_S = 0.2


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) on ``PATH``, with Selenium importable; else unavailable."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable(f"selenium not installed: {HOW}")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver))
                               if p is None)
        unavailable(f"{missing} not installed: {HOW}")
    return browser, driver


def chrome(browser: str, driver: str, size: str = "1280,900") -> Any:
    """A headless Chromium session (its console log kept for the CSP check)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={size}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Console:
    """The console page in one browser tab (``url``: the app's base URL)."""

    def __init__(self, driver: Any, url: str, token: str) -> None:
        self.driver = driver
        self.url = url
        self.token = token

    # ---- reading ----------------------------------------------------------------------------
    def find(self, test: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'[data-test="{test}"]')

    def _safely(self, read: Callable[[], Any], default: Any) -> Any:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )

        try:
            return read()
        except (NoSuchElementException, StaleElementReferenceException):
            return default

    def text(self, test: str) -> str:
        """The element's visible text ("" when it is not on the page)."""
        return str(self._safely(lambda: self.find(test).text, "")).strip()

    def shown(self, test: str) -> bool:
        return bool(self._safely(lambda: self.find(test).is_displayed(), False))

    def rows(self, test: str) -> list[str]:
        """The body rows of table ``test``, each as its cells' text joined by spaces ([] when
        the table is not on the page). One script call, however many rows."""
        script = ("const t = document.querySelector(`[data-test=\"${arguments[0]}\"]`);"
                  "return t ? [...t.querySelectorAll('tbody tr')].map(r => [...r.cells]"
                  ".map(c => c.innerText.trim()).join(' ')) : [];")
        return [str(row) for row in self.driver.execute_script(script, test)]

    def wait_text(self, test: str, ok: Callable[[str], bool], timeout: float = WAIT_S) -> str:
        """Wait until element ``test`` shows text that ``ok`` accepts; that text."""
        seen: list[str] = []

        def check() -> bool:
            seen.append(self.text(test))
            return ok(seen[-1])

        try:
            wait_until(check, timeout, f"{test} to show the expected text", interval=POLL_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it showed {seen[-1]!r}") from None
        return seen[-1]

    def wait_shown(self, test: str, timeout: float = WAIT_S) -> None:
        wait_until(lambda: self.shown(test), timeout, f"{test} to be shown", interval=POLL_S)

    def csp_violations(self) -> list[str]:
        """Messages in the browser's console about a Content Security Policy refusal."""
        return [e["message"] for e in self.driver.get_log("browser")
                if "Content Security Policy" in e["message"]]

    # ---- acting ------------------------------------------------------------------------------
    def click(self, test: str) -> None:
        """Click element ``test`` once it is shown and enabled (found afresh if redrawn)."""
        def attempt() -> bool:
            def press() -> bool:
                node = self.find(test)
                if not (node.is_displayed() and node.is_enabled()):
                    return False
                node.click()
                return True

            return bool(self._safely(press, False))

        wait_until(attempt, WAIT_S, f"{test} to be clickable", interval=POLL_S)

    def type_into(self, test: str, text: str) -> None:
        node = self.find(test)
        node.clear()
        node.send_keys(text)

    def select(self, test: str, value: str) -> None:
        from selenium.webdriver.support.select import Select

        Select(self.find(test)).select_by_value(value)

    def go(self, route: str) -> None:
        """Open ``#<route>`` of the console (logging in first if the tab is logged out)."""
        if not self.driver.current_url.startswith(self.url + "/ui/"):
            self.driver.get(self.url + "/ui/")
        if self.shown("login-form"):
            self.log_in(self.token)
            wait_until(lambda: not self.shown("login-form"), WAIT_S, "the login to pass",
                       interval=POLL_S)
        self.driver.get(f"{self.url}/ui/#{route}")

    def log_in(self, token: str) -> None:
        self.wait_shown("login-form")
        self.type_into("login-token", token)
        self.click("login-submit")

    def log_out(self) -> None:
        if self.shown("logout"):
            self.click("logout")
        self.wait_shown("login-form")


@contextmanager
def open_console(browser: str, driver: str, url: str, token: str) -> Iterator[Console]:
    """A browser on the console at ``url``, logged in with ``token``."""
    session = chrome(browser, driver)
    try:
        session.get(url + "/ui/")
        console = Console(session, url, token)
        console.log_in(token)
        console.wait_shown("overview")
        yield console
    finally:
        session.quit()
