"""The Python client and composition root of the actor system: ``start``, ``up``, ``connect``;
the async client (``AsyncClient``, public as ``raysys.aio``).

Ray and ``raysys.actors`` are imported inside functions only (DESIGN.md, "Layers").
"""

from raysys.client.async_client import AsyncClient
from raysys.client.client import Client
from raysys.client.launch import connect, start, up

__all__ = ["AsyncClient", "Client", "connect", "start", "up"]
