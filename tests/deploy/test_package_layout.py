"""`raysys.actors` and `raysys.serve` resolve from a checkout, a wheel, and a checkout over a wheel.

pyproject maps `actors/` and `serve/` into the `raysys` namespace with `package-dir`; in a source
checkout `raysys/__init__.py` extends its own `__path__` to do the same (DESIGN.md, "Layers").
Each case runs a fresh interpreter with `-S` (no site processing, so neither an editable install's
finder nor a user site can help) and puts site-packages back explicitly, after the path under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
LUA_DIR = REPO / "raysys" / "store" / "scripts"
SITE_PACKAGES = list(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))

PROBE = """
import json, raysys, raysys.actors, raysys.serve
print(json.dumps({
    "raysys": raysys.__file__,
    "actors": raysys.actors.__file__,
    "serve": raysys.serve.__file__,
    "path": list(raysys.__path__),
}))
"""

# What a build reads from the checkout: metadata files and the three mapped folders.
_BUILD_INPUTS = ("pyproject.toml", "README*", "LICENSE*", "raysys", "actors", "serve")
# Where each subpackage comes from when the checkout is imported (and "path": its root).
FROM_CHECKOUT = {
    "raysys": REPO / "raysys" / "__init__.py",
    "actors": REPO / "actors" / "__init__.py",
    "serve": REPO / "serve" / "__init__.py",
    "path": REPO,
}
_NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")


def _probe(*path: Path, cwd: Path) -> dict[str, Path]:
    """Import the three packages in a fresh interpreter; return where each came from.

    Key "path" is the last entry of ``raysys.__path__``: the repository root in a checkout.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), *SITE_PACKAGES])
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"import failed (cwd={cwd}, path={path}):\n{done.stderr}"
    found = json.loads(done.stdout)
    found["path"] = found["path"][-1]
    return {name: Path(file).resolve() for name, file in found.items()}


def _pip(command: str, *args: str, timeout: float) -> None:
    """``pip COMMAND --no-deps ARGS`` in this interpreter, quietly; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", command, "--no-deps", "--disable-pip-version-check", "-q",
         *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"pip {command} {' '.join(args)} failed:\n{done.stdout}\n" \
        f"{done.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (the checkout itself gets no build/ litter)."""
    source = tmp_path_factory.mktemp("source")
    for pattern in _BUILD_INPUTS:
        for item in REPO.glob(pattern):
            if item.is_dir():
                shutil.copytree(item, source / item.name, ignore=_NOT_SOURCE)
            else:
                shutil.copy2(item, source / item.name)
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-build-isolation", "-w", str(out), str(source), timeout=180)
    (built,) = out.glob("raysys-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with --target into a folder of its own."""
    target = tmp_path_factory.mktemp("target")
    _pip("install", "--no-index", "--target", str(target), str(wheel), timeout=120)
    return target


def test_checkout_resolves_without_install() -> None:
    # given a source checkout on PYTHONPATH and as cwd, nothing installed
    # when the subpackages are imported
    found = _probe(REPO, cwd=REPO)

    # then they come from the folders beside raysys/
    assert found == FROM_CHECKOUT


def test_wheel_ships_the_mapped_layout(wheel: Path) -> None:
    # given the files in the wheel
    names = set(zipfile.ZipFile(wheel).namelist())

    # then the subpackages live under raysys/, with the typing marker and nothing top-level beside
    for required in (
        "raysys/__init__.py",
        "raysys/py.typed",
        "raysys/actors/__init__.py",
        "raysys/serve/__init__.py",
    ):
        assert required in names
    top_level = {name.split("/", 1)[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"raysys"}

    # and every package of the checkout ships (pyproject lists packages one by one)
    for folder, mapped in (("raysys", "raysys"), ("actors", "raysys/actors"),
                           ("serve", "raysys/serve")):
        for init in (REPO / folder).rglob("__init__.py"):
            inner = init.relative_to(REPO / folder).as_posix()
            assert f"{mapped}/{inner}" in names, f"{init.parent} is not in the wheel: add it " \
                "to [tool.setuptools] packages in pyproject.toml"

    # and every Lua script of the checkout ships
    lua_in_checkout = {f"raysys/store/scripts/{p.name}" for p in LUA_DIR.glob("*.lua")}
    assert lua_in_checkout, f"no Lua scripts in {LUA_DIR}"
    lua_in_wheel = {n for n in names
                    if n.startswith("raysys/store/scripts/") and n.endswith(".lua")}
    assert lua_in_checkout <= lua_in_wheel, f"not shipped: {sorted(lua_in_checkout - lua_in_wheel)}"

    # and the console's and /docs's files ship (both must work with no way out of the cluster)
    static = REPO / "serve" / "static"
    static_in_checkout = {f"raysys/serve/static/{p.relative_to(static).as_posix()}"
                          for p in static.rglob("*") if p.is_file()}
    assert {"raysys/serve/static/ui/index.html",
            "raysys/serve/static/swagger/swagger-ui-bundle.js"} <= static_in_checkout
    assert static_in_checkout <= names, f"not shipped: {sorted(static_in_checkout - names)}"


def test_installed_wheel_resolves(installed: Path, tmp_path: Path) -> None:
    # given the wheel installed into a folder on PYTHONPATH, cwd elsewhere
    # when the subpackages are imported
    found = _probe(installed, cwd=tmp_path)

    # then all come from the install, and the Lua scripts are on disk beside the code
    target = installed.resolve()
    for name, file in found.items():
        assert file.is_relative_to(target), f"raysys.{name} came from {file}, not {target}"
    assert found["actors"] == target / "raysys" / "actors" / "__init__.py"
    assert found["path"] == target / "raysys", "the checkout path fix fired inside an install"
    expected_lua = {p.name for p in LUA_DIR.glob("*.lua")}
    assert expected_lua, f"no Lua scripts in {LUA_DIR}"
    shipped_lua = {p.name for p in (target / "raysys" / "store" / "scripts").glob("*.lua")}
    assert expected_lua <= shipped_lua


def test_checkout_shadowing_an_install_still_resolves(installed: Path) -> None:
    # given a checkout as cwd (first on sys.path, as on a Ray worker) and an install after it
    # when the subpackages are imported
    found = _probe(installed, cwd=REPO)

    # then the checkout wins for all three, rather than raysys.actors failing to import
    assert found == FROM_CHECKOUT
