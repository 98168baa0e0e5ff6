"""Ready-made hyperparameter sweeps, shipped in the wheel as the package ``snnexp.sweeps``.

- ``sweep/<name>.yaml``: Hydra sweeps for the Optuna sweeper, ``python -m snnexp -m +sweep=<name>``. This package is a
  Hydra search-path root (``hydra.searchpath`` in conf/train.yaml), so ``sweep`` is a config group next to conf/'s.
- ``wandb/<name>.yaml``: wandb sweep specs, ``wandb sweep sweeps/wandb/<name>.yaml`` then ``wandb agent <id>``.
"""
