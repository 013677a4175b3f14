"""The one packaging rule pyproject.toml cannot state: the top-level ``conf/`` folder ships
inside the package as ``prunelab.conf``, so the wheel carries the checkout's configs, not a copy."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "prunelab.conf"],
    package_dir={"": "src", "prunelab.conf": "conf"},
)
