"""The committed module classes (jaxpool/linen.py, nnx.py, equinox.py below their marker) are what
scripts/gen_modules.py writes from the table today: edit jaxpool/_modules.py, rerun the script, commit both."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_modules", ROOT / "scripts" / "gen_modules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.mark.parametrize("flavour", sorted(GEN.FLAVOURS))
def test_generated_modules_are_current(flavour):
    current = (ROOT / "jaxpool" / f"{flavour}.py").read_text()
    assert current.count(GEN.MARKER) == 1
    assert GEN.rendered(flavour, current) == current, f"jaxpool/{flavour}.py is stale: run python scripts/gen_modules.py"


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    """--check exits 1 naming a file whose generated part was edited by hand, and writes nothing."""
    (tmp_path / "jaxpool").mkdir()
    for flavour in GEN.FLAVOURS:
        text = (ROOT / "jaxpool" / f"{flavour}.py").read_text()
        if flavour == "nnx":
            text = text.replace("class MaxPool(PoolModule):", "class MaxPool(PoolModule):  # edited", 1)
        (tmp_path / "jaxpool" / f"{flavour}.py").write_text(text)
    monkeypatch.setattr(GEN, "ROOT", tmp_path)
    edited = (tmp_path / "jaxpool" / "nnx.py").read_text()
    assert GEN.main(["--check"]) == 1
    assert capsys.readouterr().out.strip() == "stale: jaxpool/nnx.py"
    assert (tmp_path / "jaxpool" / "nnx.py").read_text() == edited
    assert GEN.main([]) == 0 and GEN.main(["--check"]) == 0


def test_generated_classes_carry_the_function_annotations():
    """Explicit, typed signatures (what pyright and IDEs read), taken from the functions' own annotations."""
    text = (ROOT / "jaxpool" / "nnx.py").read_text()
    init = "def __init__(\n        self,\n        window_shape: Sequence[int],\n        strides: int | Sequence[int] | None"
    assert init in text
    assert "def __call__(self, y: jax.Array, indices: jax.Array, output_size: Sequence[int] | None = None) -> jax.Array:" in text
