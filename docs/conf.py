"""Sphinx configuration of roistore's documentation (``make docs``; warnings are errors there)."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# Keras reads its backend's device settings when imported by the API pages' modules: the CPU
# only, and quietly, so that a build never touches a GPU or prints TensorFlow's start-up lines.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from roi_store import __version__  # noqa: E402 -- after the environment above

project = "roistore"
author = "the roistore authors"
copyright = "roistore authors; MIT licence"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx_click",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext"}
# Markdown is read only where a page includes it (benchmarks/results.md), never as a page itself.
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
root_doc = "index"
# Literal blocks are commands and program output unless a block names its language.
highlight_language = "none"
# Option names in help texts (--scheduler) must stay two hyphens, not become a dash.
smartquotes = False
nitpicky = False

# API pages: the numpydoc sections of each public function, members listed by autodoc alone.
autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 2

html_theme = "pydata_sphinx_theme"
html_title = f"roistore {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# The pages are one level deep: the top bar lists them, and a left sidebar would stay empty.
html_sidebars = {"**": []}
html_show_sourcelink = False
html_static_path: list[str] = []

#: Pages written beside these ones, in the order the user guide lists them; each appears in the
#: guide once its file exists, so the build passes with or without it.
GUIDE_PAGES = ["report", "long-runs", "flow", "ststnet"]
#: The pages index.rst names itself.
OWN_PAGES = {"index", "getting-started", "tutorial", "concepts", "reproduce", "cli", "api", "format",
             "benchmarks"}
#: The line of index.rst that stands for the guide pages present.
GUIDE_MARK = "   @guide-pages@\n"


def guide_pages(folder: Path = DOCS) -> list[str]:
    """The guide pages present in ``folder``: those of :data:`GUIDE_PAGES` first, then any other page."""
    present = {p.stem for p in folder.glob("*.rst")} - OWN_PAGES
    return [p for p in GUIDE_PAGES if p in present] + sorted(present - set(GUIDE_PAGES))


def _insert_guide_pages(app, docname, source):
    # A toctree entry for a missing page is a warning, and a glob that matches nothing is one too:
    # the pages present are written into index.rst's guide toctree as it is read.
    if docname == "index":
        source[0] = source[0].replace(GUIDE_MARK, "".join(f"   {p}\n" for p in guide_pages()))


def setup(app):
    app.connect("source-read", _insert_guide_pages)
