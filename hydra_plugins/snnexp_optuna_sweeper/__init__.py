"""snnexp's Optuna sweeper, a Hydra Sweeper plugin: ``python -m snnexp -m hydra/sweeper=optuna ...``.

Hydra finds it by scanning the ``hydra_plugins`` namespace package; :mod:`.config` registers
``hydra/sweeper=optuna`` and the ``hydra/sweeper/sampler`` and ``hydra/sweeper/pruner`` options.
Optuna itself is imported only when a sweep runs, so other commands do not pay for it. Hydra's scan executes
these modules outside ``sys.modules``: they avoid ``from __future__ import annotations`` (dataclasses need the types).
"""


def register_with_hydra() -> None:
    """Register the sweeper and its configs by hand (idempotent). Hydra finds plugins by listing the files of the
    ``hydra_plugins`` namespace, which a PEP 660 editable install (``pip install -e .``) serves through an import hook
    that cannot be listed; snnexp's entry point calls this so the plugin works in both installs."""
    from hydra.core.plugins import Plugins

    from . import config  # noqa: F401  (stores hydra/sweeper=optuna on import)
    from .sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)
