"""The snapshot data and file formats (no Redis here).

Data: for each key, in name order, the name length (u32), the name after the namespace prefix,
its PTTL in ms (i64, -1: none), the DUMP payload length (u32) and the payload. A sorted set too
large to DUMP in a few ms is several entries of the same name instead, each a part: ``\0RSZ``
and a msgpack array ``member, score, ...`` (scores as Redis prints them), added up on restore.
File: ``RAYSYS-SNAPSHOT 1`` and a newline, the signed manifest and a newline, then the data;
mode 0600, written atomically. Reading checks framing only; :mod:`raysys.snapshots` verifies
the signature and the digest.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from raysys.errors import IntegrityError, NotFound, ValidationError

FILE_MAGIC = b"RAYSYS-SNAPSHOT 1\n"
Entry = tuple[bytes, int, bytes]  # key name after the prefix, PTTL ms (-1: none), DUMP payload
_U32, _I64 = struct.Struct(">I"), struct.Struct(">q")
ZSET_PART_MAGIC = b"\0RSZ"


def encode_zset_part(flat: Sequence[bytes]) -> bytes:
    """A part of a sorted set: ``flat`` is member, score, member, score, ... (bytes), as msgpack
    (an array of str16/str32 items, which every Redis Lua ``cmsgpack`` reads)."""
    out = [ZSET_PART_MAGIC, b"\xdd", _U32.pack(len(flat))]
    for item in flat:
        out += [b"\xda", struct.pack(">H", len(item))] if len(item) < 1 << 16 else [
            b"\xdb", _U32.pack(len(item))]
        out.append(item)
    return b"".join(out)


def new_snapshot_id() -> str:
    """``<UTC time>-<random>``, e.g. ``20250101T120000Z-0a1b2c3d``: sorts by time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def encode_entries(entries: Sequence[Entry]) -> bytes:
    parts: list[bytes] = []
    for name, pttl, payload in entries:
        parts += [_U32.pack(len(name)), name, _I64.pack(pttl), _U32.pack(len(payload)), payload]
    return b"".join(parts)


class EntryWriter:
    """Appends encoded entries to a binary file, hashing them on the way (sha256, length,
    count): the data of a snapshot, written without holding it in memory."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.length = 0
        self.count = 0

    def add(self, name: bytes, pttl: int, payload: bytes) -> None:
        for part in (_U32.pack(len(name)), name, _I64.pack(pttl), _U32.pack(len(payload)),
                     payload):
            self.fh.write(part)
            self.digest.update(part)
            self.length += len(part)
        self.count += 1


def iter_entries(fh: BinaryIO, length: int) -> Iterator[Entry]:
    """The entries in the next ``length`` bytes of ``fh``; IntegrityError on framing errors."""
    left = length
    while left > 0:
        head = fh.read(4)
        if len(head) < 4:
            raise IntegrityError("snapshot data is truncated", reason="malformed")
        (n,) = _U32.unpack(head)
        name = fh.read(n)
        rest = fh.read(12)
        if len(name) != n or len(rest) != 12 or not name:
            raise IntegrityError("snapshot data is malformed", reason="malformed")
        (pttl,) = _I64.unpack(rest[:8])
        (m,) = _U32.unpack(rest[8:])
        payload = fh.read(m)
        if len(payload) != m:
            raise IntegrityError("snapshot data is truncated", reason="malformed")
        left -= 16 + n + m
        if left < 0:
            raise IntegrityError("snapshot data overruns its length", reason="malformed")
        yield name, pttl, payload


def hash_file_part(fh: BinaryIO, length: int, block: int = 1 << 20) -> tuple[str, int]:
    """sha256 hex and byte count of the next ``length`` bytes of ``fh`` (fewer at EOF)."""
    digest, seen = hashlib.sha256(), 0
    while seen < length:
        chunk = fh.read(min(block, length - seen))
        if not chunk:
            break
        digest.update(chunk)
        seen += len(chunk)
    return digest.hexdigest(), seen


def decode_entries(data: bytes) -> list[Entry]:
    """Inverse of :func:`encode_entries`; IntegrityError on any framing error."""
    entries: list[Entry] = []
    view, pos, end = memoryview(data), 0, len(data)
    try:
        while pos < end:
            (n,) = _U32.unpack_from(view, pos)
            name = bytes(view[pos + 4:pos + 4 + n])
            pos += 4 + n
            (pttl,) = _I64.unpack_from(view, pos)
            (m,) = _U32.unpack_from(view, pos + 8)
            payload = bytes(view[pos + 12:pos + 12 + m])
            pos += 12 + m
            if len(name) != n or len(payload) != m or not name:
                raise struct.error("truncated entry")
            entries.append((name, pttl, payload))
    except struct.error:
        raise IntegrityError("snapshot data is malformed", reason="malformed") from None
    return entries


def write_snapshot_file(path: Path, manifest: bytes, data: bytes | BinaryIO) -> None:
    """Write ``path`` atomically (temporary file, fsync, rename), mode 0600. ``data``: bytes,
    or a file positioned at the data's start, copied to its end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(FILE_MAGIC + manifest + b"\n")
            if isinstance(data, bytes | bytearray):
                fh.write(data)
            else:
                while chunk := data.read(1 << 20):
                    fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_snapshot_file(path: Path) -> tuple[bytes, BinaryIO]:
    """(manifest, the open file positioned at the data), unverified; IntegrityError if it is
    not a snapshot file. The caller closes the file."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"no snapshot file {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read snapshot file {path}: {exc.strerror}") from None
    head = fh.read(len(FILE_MAGIC))
    if head != FILE_MAGIC:
        fh.close()
        raise IntegrityError(f"{path} is not a raysys snapshot file (bad header)",
                             reason="malformed")
    manifest = fh.readline(1 << 22)
    if not manifest.endswith(b"\n"):
        fh.close()
        raise IntegrityError(f"{path}: snapshot manifest is not terminated", reason="malformed")
    return manifest[:-1], fh


def read_snapshot_file(path: Path) -> tuple[bytes, bytes]:
    """(manifest, data) of a snapshot file, unverified; IntegrityError if it is not one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no snapshot file {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read snapshot file {path}: {exc.strerror}") from None
    if not raw.startswith(FILE_MAGIC):
        raise IntegrityError(f"{path} is not a raysys snapshot file (bad header)",
                             reason="malformed")
    end = raw.find(b"\n", len(FILE_MAGIC))
    if end < 0:
        raise IntegrityError(f"{path}: snapshot manifest is not terminated", reason="malformed")
    return raw[len(FILE_MAGIC):end], raw[end + 1:]


