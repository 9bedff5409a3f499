"""Ray Serve application of raysys, imported as ``raysys.serve``.

Will hold the HTTP app: ``/health``, ``/metrics`` and the task API (``POST /tasks``,
``GET /tasks/{id}``), finding or starting the named actors through ``raysys.actors``
(DESIGN.md, "Layers"). Importing this package must stay cheap: no ``ray`` import at module level.
"""

LAYER = "serve"
