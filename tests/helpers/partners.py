"""How the combination tests pick a cheap partner for each config option, derived from the options themselves.

- A model *fits* a data option when Hydra can instantiate it (on the meta device: no memory, no init cost) for that
  data's input shape and number of classes, exactly as ``snnexp.train.build`` does; a model that does not fit is
  what ``build`` refuses with IncompatibleError ("cannot be built for data ...").
  So point clouds meet the models whose input is (C, N), and a model too deep for small images meets larger ones.
- A model option's partner is the default data option of ``conf/train.yaml`` if the model fits it, else the cheapest
  data it fits (fewest input values per sample: the product of ``input_shape`` and the time steps).
- A model *family* is the module of the option's ``_target_`` (``resnet``, ``spikedriven``, ``pointnet``...); its
  representative is the family's option with the fewest parameters at its partner data, shrunk where its yaml has
  the width/depth keys of the token models (``dim``, ``layers``, ``depth``, ``heads``). Data options and methods
  meet every family through its representative.
- A method whose config has ``teacher_ckpt`` needs a `method=ann` teacher of the same model and data.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers.runs import compose_config, options
from snnexp.config import CONF_DIR

# the width/depth of a model option run small, for the keys its yaml has (the token models)
SHRINK = {"layers": 2, "depth": 2, "dim": 32, "heads": 4}


def yaml_of(group: str, option: str) -> dict:
    return yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {}


def family(model: str) -> str:
    """The module of the model option's ``_target_``: snnexp.models.<family>.<factory>."""
    return yaml_of("model", model)["_target_"].split(".")[-2]


def shrink(model: str) -> list[str]:
    """Overrides that run ``model`` small: the SHRINK keys its yaml has."""
    node = yaml_of("model", model)
    return [f"model.{k}={v}" for k, v in SHRINK.items() if k in node]


def needs_teacher(method: str) -> bool:
    return "teacher_ckpt" in yaml_of("method", method)


def default_option(group: str) -> str:
    """The option ``conf/train.yaml`` picks for ``group``."""
    for entry in yaml.safe_load((CONF_DIR / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    raise KeyError(group)


class Partners:
    """Partners over the tiny datasets of ``data_roots`` (data option -> the overrides that select it)."""

    def __init__(self, data_roots: dict[str, list[str]]):
        self.data_roots = data_roots
        base = OmegaConf.to_container(compose_config(["T=2"]), resolve=False)
        # what a data or model option may refer to: the top-level values, paths and the neuron
        self._base = {k: v for k, v in base.items() if not isinstance(v, dict) or k in ("paths", "neuron")}
        self._nodes = {}
        self._data = {}
        self._built = {}

    def _node(self, group: str, option: str, *overrides: str) -> dict:
        """The group's option composed on its own (a fraction of a whole composition's time), as a plain dict."""
        key = (group, option, overrides)
        if key not in self._nodes:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                node = compose(f"{group}/{option}", overrides=list(overrides))[group]
            self._nodes[key] = OmegaConf.to_container(node, resolve=False)
        return self._nodes[key]

    def _config(self, data: str, model: str | None = None, *extra: str):
        """The default composition with this data option (and model option), interpolations left to resolve."""
        nodes = {"data": self._node("data", data, *self.data_roots[data][1:])}
        if model is not None:
            nodes["model"] = self._node("model", model, *extra)
        return OmegaConf.create({**self._base, **nodes})

    def data(self, data: str):
        """(input_shape, time_steps, num_classes) of the data option, from its datamodule (no disk access)."""
        if data not in self._data:
            dm = instantiate(self._config(data).data)
            self._data[data] = (tuple(dm.input_shape), dm.time_steps, dm.num_classes)
        return self._data[data]

    def cost(self, data: str) -> int:
        shape, steps, _ = self.data(data)
        return math.prod(shape) * (steps or 1)

    def build(self, model: str, data: str, *extra: str):
        """The model built on the meta device for the data (None if it does not fit, as snnexp.train.build refuses
        it), cached. The model's interpolations (e.g. ``${data.use_normals}``) see this data option."""
        key = (model, data, extra)
        if key not in self._built:
            shape, _, num_classes = self.data(data)
            cfg = self._config(data, model, *extra)
            try:
                with torch.device("meta"):
                    self._built[key] = instantiate(cfg.model, neuron=instantiate(cfg.neuron), input_shape=shape,
                                                   num_classes=num_classes)
            except InstantiationException:
                self._built[key] = None
        return self._built[key]

    def fits(self, model: str, data: str, *extra: str) -> bool:
        return self.build(model, data, *extra) is not None

    def params(self, model: str, data: str, *extra: str) -> int:
        return sum(p.numel() for p in self.build(model, data, *extra).parameters())

    def has_stages(self, model: str, data: str, *extra: str) -> bool:
        return hasattr(self.build(model, data, *extra), "stages")

    @cache
    def data_for(self, model: str, *extra: str) -> str:
        """The default data if the model fits it, else the cheapest data option it fits."""
        default = default_option("data")
        if self.fits(model, default, *extra):
            return default
        fitting = [d for d in options("data") if self.fits(model, d, *extra)]
        assert fitting, f"model={model} {' '.join(extra)} cannot be built for any conf/data option"
        return min(fitting, key=lambda d: (self.cost(d), d))

    @cache
    def representative(self, family_name: str) -> str:
        """The family's option with the fewest parameters, shrunk, at its partner data."""
        members = [m for m in options("model") if family(m) == family_name]
        return min(members, key=lambda m: (self.params(m, self.data_for(m, *shrink(m)), *shrink(m)), m))
