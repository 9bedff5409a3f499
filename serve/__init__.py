"""Ray Serve application of raysys, imported as ``raysys.serve``.

``raysys.serve.app`` builds the HTTP app (FastAPI): ``/health``, ``/metrics``, the task,
schedule, worker and stats routes, ``/docs`` and the console under ``/ui``; its start-up finds
or starts the named actors through ``raysys.actors`` (DESIGN.md, "Layers"), so a RayService
alone brings the whole system up. Importing this package stays cheap: no ``ray`` import at
package level.
"""

LAYER = "serve"
