"""raysys: run tasks on a Ray cluster so that none is lost and none is committed twice."""

from pathlib import Path

__version__ = "0.1.0"
__all__: list[str] = []

# pyproject maps actors/ and serve/ to raysys.actors and raysys.serve. A source checkout on
# sys.path (Ray puts the driver's cwd there) shadows any install with this bare folder, so there
# the checkout root joins this package's path and the mapping still holds (DESIGN.md, "Layers").
_here = Path(__file__).resolve().parent
if (_here.parent / "actors").is_dir() and not (_here / "actors").is_dir():
    __path__.append(str(_here.parent))
