"""Command line: ``python -m snnexp [group=option ...] [key=value ...]`` (or the ``snnexp`` console script).

Composes ``conf/train.yaml`` with Hydra and runs :func:`snnexp.train.run`. Errors caused by the user's input
(:class:`snnexp.errors.SnnexpError`) are printed as one message and exit with status 1, without a traceback; in a
multirun the failing job is reported the same way and the sweep goes on with the next job.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from snnexp.config import CONF_DIR, register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig):
    from snnexp.errors import SnnexpError, SweepConfigError
    from snnexp.train import run

    try:
        return run(cfg)
    except SnnexpError as err:
        if _in_multirun() and not isinstance(err, SweepConfigError):  # one refused job must not stop the rest of the sweep
            print(f"snnexp: error in job {HydraConfig.get().job.num}: {err}", file=sys.stderr)
            return None
        print(f"snnexp: error: {err}", file=sys.stderr)
        sys.exit(1)


def _in_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
