"""raysys with ``await``: an async client for asyncio applications (FastAPI, aiohttp, ...).

``client = await raysys.aio.connect(...)`` (the arguments of ``raysys.connect``) or
``await raysys.aio.start(...)`` (those of ``raysys.start``) give an :class:`AsyncClient`:
``await client.submit(kind, payload)``, ``submit_many``, ``wait(ids, timeout)``,
``result(id, timeout)``, ``cancel(id)``, ``tasks(...)``, ``history``, ``redrive``, ``schedule``
and ``shutdown()`` (or ``async with``), raising the errors the synchronous client raises.
"""

from raysys.client.async_client import AsyncClient, connect, start

__all__ = ["AsyncClient", "connect", "start"]
