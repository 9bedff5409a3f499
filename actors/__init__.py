"""Ray actors of raysys, imported as ``raysys.actors``.

Will hold the Coordinator, Distributor and Worker actors: thin shells over the core logic in
``raysys``, and the one place that calls ``ray.remote``, names the actors and sets their options
(DESIGN.md, "Layers"). Importing this package must stay cheap: no ``ray`` import at module level.
"""

LAYER = "actors"
