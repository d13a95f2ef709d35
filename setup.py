"""Map every ``krabby.*`` package to the Kit extension folder that owns it.

``krabby`` is a namespace package split across ``exts/krabby.hal`` and ``exts/krabby.parkour`` so
Kit can load each extension from its own folder; setuptools' ``find`` cannot merge two roots, so
the mapping is computed here. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

EXTENSIONS = ("exts/krabby.hal", "exts/krabby.parkour")

package_dir = {}
for ext in EXTENSIONS:
    for pkg in find_namespace_packages(ext, include=["krabby.*"]):
        package_dir[pkg] = f"{ext}/{pkg.replace('.', '/')}"

setup(packages=sorted(package_dir), package_dir=package_dir)
