"""The documentation runs: every public op's ``Examples`` doctest, every jaxpool module's doctests, the README's code."""

import doctest
import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

import jaxpool

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
OPTIONAL = {"jaxpool.equinox": "equinox"}  # modules that need an optional extra


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(jaxpool.__path__, "jaxpool.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_module_doctests_pass(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest lines of {name} failed (run: python -m doctest -v)"


@pytest.mark.parametrize("name", jaxpool.__all__)
def test_every_public_op_has_a_runnable_example(name):
    doc = inspect.getdoc(getattr(jaxpool, name))
    assert "\nExamples:\n" in doc, f"{name}'s docstring has no Examples section"
    examples = doctest.DocTestParser().get_examples(doc.split("\nExamples:\n", 1)[1])
    assert any(e.want for e in examples), f"{name}'s Examples show no output to check"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_readme_python_blocks_run_in_order_each_as_pasted():
    """Each block runs, in order, in a fresh namespace: pasted alone it imports and defines what it uses."""
    blocks = _python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    for i, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), {})
        except Exception as e:  # name the failing block
            raise AssertionError(f"README python block {i} failed: {type(e).__name__}: {e}") from e
