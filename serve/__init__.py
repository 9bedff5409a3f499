"""Ray Serve application of raysys, imported as ``raysys.serve``.

``raysys.serve.app`` holds the HTTP app: ``/health``, ``/metrics`` and the task API
(``POST /tasks``, ``GET /tasks/{id}``); its start-up finds or starts the named actors through
``raysys.actors`` (DESIGN.md, "Layers"), so a RayService alone brings the whole system up.
Importing this package stays cheap: no ``ray`` import at package level.
"""

LAYER = "serve"
