"""Where the keyring comes from, and reloading it so every node converges without a restart.

A :class:`KeyringSource` is a callable returning the current :class:`Keyring`; hand it to
:class:`raysys.envelope.Sealer`. It re-reads its origin (a file, e.g. a Kubernetes Secret
mounted read-only, or a fixed text) at most every ``interval_s`` seconds (default 2 s, so a
change is seen within 5 s) and only when the file changed. A file that is briefly unreadable or
malformed mid-update keeps the previous keyring and logs the error; nothing crashes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from raysys.config import Settings
from raysys.errors import KeyringError
from raysys.signing.keyring import (
    Keyring,
    generate_key,
    load_keyring_file,
    load_keyring_text,
    write_keyring_file,
)

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 2.0


def keyring_path(settings: Settings) -> Path:
    """The keyring file the settings name: ``RAYSYS_SIGNING_KEY_FILE``, else the data dir's."""
    return settings.signing_key_file or settings.data_dir / "keys.json"


def keyring_source(settings: Settings, *, create: bool | None = None) -> KeyringSource:
    """A reloading source for the settings' keyring (file), or a fixed one (variable).

    ``create`` defaults to: only for the embedded default (no Redis configured, no key file
    named), which makes ``<data dir>/keys.json`` on first use.
    """
    if settings.signing_keys is not None:
        return KeyringSource(text=settings.signing_keys.get_secret_value())
    path = keyring_path(settings)
    if create is None:
        create = not settings.redis_configured and settings.signing_key_file is None
    if create and not path.exists():
        write_keyring_file(path, Keyring([generate_key()]))
        log.warning("created a new signing keyring at %s (keep it; back it up)", path)
    return KeyringSource(path)


def load_keyring(settings: Settings, *, create: bool | None = None) -> Keyring:
    """The keyring the settings name, read now (``create`` as for :func:`keyring_source`)."""
    return keyring_source(settings, create=create)()


class KeyringSource:
    """The current keyring of a file (reloaded on change) or of a fixed text."""

    def __init__(self, path: Path | None = None, *, text: str | None = None,
                 source: str = "RAYSYS_SIGNING_KEYS",
                 interval_s: float = RELOAD_INTERVAL_S) -> None:
        if (path is None) == (text is None):
            raise ValueError("KeyringSource needs exactly one of path or text")
        self.path = path
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        if path is not None:
            self._stamp = _stamp(path)
            self._keyring = load_keyring_file(path)
        else:
            self._stamp = None
            self._keyring = load_keyring_text(text or "", source=source)

    def __call__(self) -> Keyring:
        if self.path is not None and time.monotonic() - self._checked >= self.interval_s:
            self._maybe_reload()
        return self._keyring

    def reload(self) -> Keyring:
        """Re-read now (tests, `raysys keys` commands); the same rules as a timed reload."""
        self._checked = 0.0
        return self()

    def _maybe_reload(self) -> None:
        assert self.path is not None
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            try:
                keyring = load_keyring_file(self.path)
            except KeyringError as exc:
                log.error("keyring %s changed but cannot be used (%s); keeping the previous one",
                          self.path, exc)
                return
            self._stamp = stamp
            before = {k.kid: k.status for k in self._keyring.keys()}
            after = {k.kid: k.status for k in keyring.keys()}
            self._keyring = keyring
            log.info("keyring %s reloaded: %s", self.path, _describe_change(before, after))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: Kubernetes swaps a ..data link on update
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _describe_change(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    parts = [f"{kid} {before.get(kid, 'new')} -> {status}" for kid, status in after.items()
             if before.get(kid) != status]
    parts += [f"{kid} removed" for kid in before if kid not in after]
    return ", ".join(parts) or "no status change"
