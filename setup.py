"""Only the package list lives here; everything else is in pyproject.toml.

`ivfusion.assets` is the repository's top-level assets/ folder (mapped by pyproject's
package-dir), which `packages.find` cannot add next to the packages it finds under ivfusion/.
"""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["ivfusion", "ivfusion.*"]), "ivfusion.assets"])
