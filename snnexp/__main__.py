"""Command line: ``python -m snnexp [group=option ...] [key=value ...]`` (or the ``snnexp`` console script).

Composes ``conf/train.yaml`` with Hydra and runs :func:`snnexp.train.run`. Errors caused by the user's input
(:class:`snnexp.errors.SnnexpError`) are printed as one message and exit with status 1, without a traceback; in a
multirun the failing job is reported the same way and the sweep goes on with the next job.
"""

import logging
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hydra_plugins.snnexp_optuna_sweeper import register_with_hydra
from snnexp.config import CONF_DIR, register_schemas

register_schemas()
register_with_hydra()  # hydra/sweeper=optuna, also where an editable install hides it from Hydra's plugin scan


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig):
    from snnexp.errors import SnnexpError, SweepConfigError
    from snnexp.train import run

    try:
        return run(cfg)
    except SnnexpError as err:
        if _in_multirun() and not isinstance(err, SweepConfigError):  # one refused job must not stop the rest of the sweep
            _report(f"snnexp: error in job {HydraConfig.get().job.num}: {err}")
            return None
        _report(f"snnexp: error: {err}")
        sys.exit(1)
    except SystemExit as stop:  # a preempted run (exit 75) says why on the console and in the log, no traceback
        if stop.code not in (None, 0):
            _to_log_file(f"snnexp: stopped: {stop}")
        raise
    except BaseException:  # not ours: Hydra prints the traceback on the console; the run's log keeps it too
        _to_log_file(traceback.format_exc().rstrip())
        raise


def _report(message: str) -> None:
    """One line on stderr, and the same line in the run's ``snnexp.log`` (which would otherwise stay empty)."""
    print(message, file=sys.stderr)
    _to_log_file(message)


def _to_log_file(message: str) -> None:
    """Write ``message`` to the log files Hydra set up (``<run dir>/snnexp.log``), not again on the console."""
    record = logging.LogRecord("snnexp", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _in_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
