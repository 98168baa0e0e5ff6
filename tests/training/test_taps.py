"""Taps (snnexp/training/taps.py): one channels-first layout [T, B, C, *positions] in every model, and every
consumer (SML branches, shortcut heads, contrastive features) reads the channels, whatever the positions are."""

import pytest
import torch

SMALL_MODELS = {
    "convnet": ["model=convnet"],
    "resnet19": ["model=resnet19"],
    "vggsnn": ["model=vggsnn"],
    "sdt": ["model=sdt", "model.layers=2", "model.dim=32", "model.heads=4"],
    "stmixer": ["model=stmixer", "model.dim=32", "model.depth=4", "model.heads=4"],
}

def _channel_only(shape, seed=0):
    """A tap ``[T, B, C, *positions]`` whose values depend on the channel only (the same at every position)."""
    g = torch.Generator().manual_seed(seed)
    per_channel = torch.randn(shape[2], generator=g) * 3
    return per_channel.view(1, 1, -1, *[1] * (len(shape) - 3)).expand(shape).contiguous()

def test_pooled_keeps_channels_for_every_layout():
    from snnexp.training.taps import channels_of, pooled

    for shape in [(2, 3, 5, 4, 4), (2, 3, 5, 7), (2, 3, 5)]:
        tap = _channel_only(shape)
        assert channels_of(shape) == 5
        torch.testing.assert_close(pooled(tap), tap[0, :, :, ...].reshape(3, 5, -1)[:, :, 0])

@pytest.mark.parametrize("model", sorted(SMALL_MODELS))
@pytest.mark.parametrize("method", ["sml", "shortcut"])
def test_tap_heads_see_information_that_is_only_in_the_channels(method, model, tmp_path):
    from helpers.runs import compose_config
    from snnexp.train import build
    from snnexp.training.taps import pooled, probe_taps

    cfg = compose_config([f"method={method}", "T=2", "data=digits", *SMALL_MODELS[model]], tmp_path / "run")
    datamodule, module = build(cfg)
    shapes = probe_taps(module.model, datamodule, batch=3, T=2)
    heads = module.method.branches if method == "sml" else module.method.heads
    module.eval()
    with torch.no_grad():
        for name, head in heads.items():
            assert shapes[name][2] == module.model(torch.zeros(2, 3, 1, 8, 8)).taps[name].shape[2]
            informative, blank = _channel_only(shapes[name]), torch.zeros(shapes[name])
            if method == "sml":
                a, b = head(informative.mean(0)), head(blank.mean(0))
            else:
                a, b = head(pooled(informative)), head(pooled(blank))
            assert not torch.allclose(a, b), f"{method} head at {model}.{name} ignores the channels"


def test_taps_keep_only_the_names_asked_for_and_say_so_when_one_is_missing():
    from snnexp.models.output import Taps

    taps = Taps(frozenset({"features"}))
    taps["layer1"], taps["features"] = torch.ones(1), torch.zeros(1)
    assert list(taps) == ["features"]
    with pytest.raises(KeyError, match=r"'layer1' was not kept.*taps_read\(\)"):
        taps["layer1"]
    everything = Taps()
    everything["layer1"] = torch.ones(1)
    assert list(everything) == ["layer1"]


def test_a_training_run_records_only_the_taps_its_method_reads(tmp_path):
    """The default method reads none: the model's forward keeps "features" only, so a stage's float spikes are
    freed once packed for the backward (a weak reference to them dies inside the forward); probing still sees every
    tap, and keep_taps(None) brings them back."""
    import gc
    import weakref

    from helpers.runs import compose_config
    from snnexp.models.layers import keep_taps
    from snnexp.train import build
    from snnexp.training.taps import probe_taps

    cfg = compose_config(["model=resnet19", "T=2", "data=digits"], tmp_path / "run")
    datamodule, module = build(cfg)
    assert module.model.kept_taps == frozenset({"features"})
    assert {"layer1", "layer2", "layer3", "features"} <= set(probe_taps(module.model, datamodule))
    assert module.model.kept_taps == frozenset({"features"})
    stage = []
    module.model.stages["layer1"].register_forward_hook(lambda m, args, out: stage.append(weakref.ref(out)))
    x = torch.rand(2, *module.input_shape)
    for kept, alive in ((frozenset({"features"}), False), (None, True)):
        keep_taps(module.model, kept)
        with module.spike_packing.saving():
            output = module(x)
        gc.collect()
        assert list(output.taps) == (["features"] if kept else ["layer1", "layer2", "layer3", "features"])
        assert (stage[-1]() is not None) is alive
        del output


@pytest.mark.parametrize("method", ["sml", "shortcut"])
def test_a_method_that_reads_taps_has_them_kept(method, tmp_path):
    from helpers.runs import compose_config
    from snnexp.train import build

    cfg = compose_config([f"method={method}", "T=2", "data=digits", "model=resnet19"], tmp_path / "run")
    _, module = build(cfg)
    read = module.method.taps_read()
    assert read and module.model.kept_taps == read | {"features"}
    output = module(torch.rand(2, *module.input_shape))
    assert set(output.taps) == read | {"features"}
