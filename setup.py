"""The packaging rules pyproject.toml cannot state: the top-level ``conf/`` folder ships
inside the package as ``prunelab.conf``, so the wheel carries the checkout's configs, not a copy;
and the Hydra plugin shell of ``hydra/sweeper=optuna`` lives in the ``hydra_plugins`` namespace
package (no ``__init__.py``, which find_packages does not descend into)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "prunelab.conf", "hydra_plugins.prunelab_optuna_sweeper"],
    package_dir={"": "src", "prunelab.conf": "conf"},
)
