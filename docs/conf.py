"""Sphinx configuration: MyST Markdown pages, autodoc + napoleon for the Google-style docstrings.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout's jaxpool, not an installed copy

import jaxpool  # noqa: E402

project = "jaxpool"
author = "the jaxpool authors"
copyright = "2026, the jaxpool authors"
release = version = jaxpool.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# jaxpool.equinox is documented once the module exists (the docs extra installs equinox for it).
if importlib.util.find_spec("jaxpool.equinox") is None:
    exclude_patterns.append("api/equinox.md")

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
nitpicky = False

html_theme = "alabaster"
html_title = f"jaxpool {release}"
html_theme_options = {"description": "Every pooling method for JAX and Flax", "page_width": "1200px", "body_max_width": "none"}
