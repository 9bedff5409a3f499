"""The Python client and composition root of the actor system: ``start``, ``up``, ``connect``.

Ray and ``raysys.actors`` are imported inside functions only (DESIGN.md, "Layers").
"""

from raysys.client.client import Client
from raysys.client.launch import connect, start, up

__all__ = ["Client", "connect", "start", "up"]
