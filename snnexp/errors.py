"""Errors that speak to the user: each is printed as one message, without a traceback, by the CLI."""


class SnnexpError(Exception):
    """Base class of every error caused by the user's input (config, data on disk, combination)."""


class DatasetNotFoundError(SnnexpError):
    """The dataset is not where the config says; the message says where we looked and how to get it."""


class CorruptFileError(SnnexpError):
    """A data file exists but cannot be parsed; the message names the file."""


class IncompatibleError(SnnexpError):
    """A composed combination (method x model x data x neuron) that cannot work, refused at start-up."""


class NonFiniteLossError(SnnexpError):
    """The training loss became NaN or Inf; the run stops and the last good checkpoint is kept."""


def dataset_not_found(name: str, root, looked_for: str, url: str, override: str = "data.root") -> DatasetNotFoundError:
    """Build the standard missing-dataset message: where we looked, how to get it, which override fixes it."""
    return DatasetNotFoundError(
        f"{name} not found under {root} (looked for {looked_for}). "
        f"Download it from {url} and set {override}=/path/to/it, or pass data.download=true "
        f"where the dataset's library can download it."
    )


class SweepConfigError(SnnexpError):
    """A setting no job of a multirun can run with (e.g. DDP under ``-m``): it stops the whole sweep."""


class ConfigValueError(SnnexpError):
    """A config value outside its valid range (a batch size of 0, a negative learning rate), refused before training."""


class RunPruned(Exception):
    """A sweeper's pruner stopped this run early (a result, not a failure): summary.json says ``"status": "pruned"``.
    Not a :class:`SnnexpError`, so the CLI does not report it as an error."""
