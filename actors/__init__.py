"""Ray actors of raysys, imported as ``raysys.actors``.

The Coordinator, Distributor and Worker actors: plain classes holding core objects (thin shells
over the core logic in ``raysys``). ``raysys.actors.factory`` is the one place that calls
``ray.remote``, names the actors and sets their options (DESIGN.md, "Layers"). Importing this
package must stay cheap: no ``ray`` import at module level outside the factory.
"""

from raysys.actors.context import ActorConfig
from raysys.actors.coordinator import Coordinator
from raysys.actors.distributor import Distributor
from raysys.actors.worker import Worker

LAYER = "actors"
__all__ = ["LAYER", "ActorConfig", "Coordinator", "Distributor", "Worker"]
