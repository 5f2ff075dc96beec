"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from etcdmap import __version__

project = "etcdmap"
author = "the etcdmap authors"
copyright = "the etcdmap authors"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]
root_doc = "index"
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_theme_options = {"description": "etcd as a Python dict", "fixed_sidebar": True}
html_static_path: list[str] = []
