"""Turn Hydra override strings (``interval``, ``tag(log, ...)``, ``choice``, ``range``, plain values) into Optuna
distributions, and trial parameters back into override strings.

A sweep override becomes a distribution; a plain override (``method=tet``) is fixed and passed to every trial.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException

from .errors import SweepInputError


@dataclass
class SearchSpace:
    """The distributions to sample (by override key) and the overrides every trial gets unchanged."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The overrides of a trial with ``params``: the fixed ones, then one ``key=value`` per parameter."""
        return [*self.fixed, *(f"{key}={format_value(value)}" for key, value in params.items())]

    def sample(self) -> dict[str, Any]:
        """One point of the space (each distribution's low end or first choice): composed to check the keys."""
        point = {}
        for key, dist in self.distributions.items():
            point[key] = dist.choices[0] if hasattr(dist, "choices") else dist.low
        return point


def parse(arguments: list[str], params: dict[str, str] | None = None, config_loader=None) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` and the command line (the command line wins on a key)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    try:
        overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(lines)
    except HydraException as err:
        raise SweepInputError(one_line(str(err))) from None
    space = SearchSpace()
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        space.distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = to_distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    space.fixed = list(fixed.values())
    return space


def to_distribution(override: Override):
    """The Optuna distribution of one sweep override; refuses empty or inverted ranges."""
    import optuna.distributions as D

    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = [_plain(v) for v in value.list]
        if not choices:
            raise SweepInputError(f"{key}: choice() needs at least one value")
        return D.CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        if value.start is None or value.stop is None:
            raise SweepInputError(f"{key}: range() needs a start and a stop")
        values = list(override.sweep_iterator())
        if not values:
            raise SweepInputError(f"{key}: range({value.start}, {value.stop}, {value.step}) is empty")
        return D.CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        low, high = value.start, value.end
        if low > high:
            raise SweepInputError(f"{key}: interval({low}, {high}) has its low end above its high end")
        if log and low <= 0:
            raise SweepInputError(f"{key}: tag(log, interval({low}, {high})) needs a positive low end")
        if isinstance(low, int) and isinstance(high, int):
            return D.IntDistribution(low, high, log=log)
        return D.FloatDistribution(float(low), float(high), log=log)
    raise SweepInputError(f"{key}: the Optuna sweeper cannot search {override.input_line!r}")


def _plain(value: Any) -> Any:
    """A choice as Optuna stores it (None, bool, int, float, str); anything else by its override text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else format_value(value)


def format_value(value: Any) -> str:
    """``value`` as override text: ``null``, ``true``, numbers as they are, strings quoted when needed."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value
        plain = text and all(c.isalnum() or c in "_-./" for c in text) and not text[0] in "-."
        return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def one_line(message: str) -> str:
    """A multi-line Hydra message as one line (the link to the grammar's docs left out)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.strip().startswith("See https://")]
    return " ".join(lines)
