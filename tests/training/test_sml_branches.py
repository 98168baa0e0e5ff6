"""SML's branches (snnexp/training/sml_branches.py): the official STMixer demo's mixer branches on token taps,
counted parameter by parameter, at the demo's attachment points."""

from torch import nn

def test_sml_on_stmixer_attaches_the_official_mixer_branches():
    """The demo's STMixerV3(depth 10, sml=True): branches after the patch embed and blocks 2, 4, 6, 8 with 3, 2, 1,
    1, 1 mixer encoder layers; each is Conv1d-BN-GELU, GELU blocks, token mean, Linear (parameters counted here)."""
    from helpers.runs import compose_config
    from snnexp.train import build

    C, heads, classes = 32, 4, 10
    cfg = compose_config(["method=sml", "model=stmixer", f"model.dim={C}", "model.depth=10", f"model.heads={heads}",
                          "T=1", "data=digits"])
    _, module = build(cfg)
    branches = module.method.branches
    assert list(branches) == ["patch_embed", "block2", "block4", "block6", "block8"]
    N = module.model.tokens
    block = (C * C + 2 * C) + heads * N * N + (C * C + 2 * C) + (C * 4 * C + 8 * C) + (4 * C * C + 2 * C)
    for name, layers in zip(branches, (3, 2, 1, 1, 1)):
        expected = (C * C + 2 * C) + layers * block + (C * classes + classes)
        assert sum(p.numel() for p in branches[name].parameters()) == expected, name
        assert sum(isinstance(m, nn.GELU) for m in branches[name].modules()) == 1 + layers * 5
    mlp = build(compose_config([*cfg_overrides(cfg), "method.token_branch=mlp"]))[1].method.branches
    assert all(not any(isinstance(m, nn.GELU) for m in b.modules()) for b in mlp.values())

def cfg_overrides(cfg):
    return ["method=sml", "model=stmixer", f"model.dim={cfg.model.dim}", f"model.depth={cfg.model.depth}",
            f"model.heads={cfg.model.heads}", "T=1", "data=digits"]
