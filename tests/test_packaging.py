"""Packaging: the runtime dependencies are what jaxpool/ imports (optional frameworks behind extras), the version
is written once, the licence file exists, and the core imports without flax or equinox."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

import jaxpool

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Third-party imports a file may make, by the extra that brings them (the rest of jaxpool/ needs only the core).
OPTIONAL = {"linen.py": "flax", "nnx.py": "flax", "equinox.py": "equinox"}
COMPARE = {"flax", "rich", "matplotlib", "torch"}  # the compare tool; torch is its optional peer (imported lazily)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _third_party_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "jaxpool"}


def _extra(name: str) -> set[str]:
    return {_name(r) for r in PROJECT["optional-dependencies"][name]}


def test_runtime_dependencies_are_what_the_package_imports():
    core = {_name(r) for r in PROJECT["dependencies"]}
    assert core == {"jax", "numpy"}
    for path in sorted((ROOT / "jaxpool").rglob("*.py")):
        imports = _third_party_imports(path)
        relative = path.relative_to(ROOT / "jaxpool").as_posix()
        if relative.startswith(("compare", "_compare")):
            assert imports <= core | COMPARE, (relative, imports)
            assert imports - core - {"torch"} <= _extra("compare"), relative  # torch: the README's pinned CPU build
        elif relative in OPTIONAL:
            assert OPTIONAL[relative] in imports and imports <= core | {OPTIONAL[relative]}, (relative, imports)
            assert OPTIONAL[relative] in _extra(OPTIONAL[relative])
        else:
            assert imports <= core, (relative, imports)
    assert not {"chex", "optax"} & core  # test/example tools, not imported by jaxpool/
    test = PROJECT["optional-dependencies"]["test"]
    pulled = set().union(*(_extra(e) for r in test if r.startswith("jaxpool[") for e in r[len("jaxpool[") : -1].split(",")))
    assert {"flax", "equinox", "rich"} <= pulled and {"chex", "optax"} <= _extra("test") and "pyright" in _extra("dev")


def test_one_version_source():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxpool.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", jaxpool.__version__)


def test_licence_and_metadata():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert PROJECT["authors"] == [{"name": "jaxpool developers"}]
    assert "Typing :: Typed" in PROJECT["classifiers"] and (ROOT / "jaxpool" / "py.typed").exists()


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flax", "equinox"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import jaxpool
assert jaxpool.max_pool(__import__("jax").numpy.ones((1, 2, 2, 1)), (2, 2)).shape == (1, 1, 1, 1)
for flavour, extra in (("linen", "flax"), ("nnx", "flax"), ("equinox", "equinox")):
    try:
        __import__("jaxpool." + flavour)
    except ModuleNotFoundError as error:
        assert f'pip install "jaxpool[{extra}]"' in str(error), error
    else:
        raise AssertionError(flavour)
"""


def test_core_imports_without_the_optional_frameworks():
    subprocess.run([sys.executable, "-c", BLOCK], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
