"""Command line: ``python -m snnexp [group=option ...] [key=value ...]`` (or the ``snnexp`` console script).

Composes ``conf/train.yaml`` with Hydra and runs :func:`snnexp.train.run`. Errors caused by the user's input
(:class:`snnexp.errors.SnnexpError`) are printed as one message and exit with status 1, without a traceback.
"""

import sys

import hydra
from omegaconf import DictConfig

from snnexp.config import CONF_DIR, register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig):
    from snnexp.errors import SnnexpError
    from snnexp.train import run

    try:
        return run(cfg)
    except SnnexpError as err:
        print(f"snnexp: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
