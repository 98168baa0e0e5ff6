"""STBP-tdBN (snnexp/methods/tdbn.py; Zheng et al., AAAI 2021): the method builds the model with tdBN in every norm and
trains."""

from helpers.runs import compose_config
from snnexp.models.norm import TDBatchNorm2d
from snnexp.train import build, run


def test_tdbn_method_builds_the_model_with_tdbn_and_runs(tmp_path):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", "method=tdbn"], tmp_path / "run")
    assert cfg.model.norm == "bn"
    _, module = build(cfg)
    assert any(isinstance(m, TDBatchNorm2d) for m in module.model.modules())
    run(cfg)
    assert (tmp_path / "run" / "summary.json").exists()
