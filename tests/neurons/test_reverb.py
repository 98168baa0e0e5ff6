"""ReverB-SNN's neuron (snnexp/neurons/reverb.py; Guo et al., ICML 2025): real-valued spikes (the membrane potential
at firing), and ``neuron=reverb`` composed and trained with binary weights."""

import json

import torch

from helpers.runs import compose_config
from snnexp.neurons.reverb import ReverBLIF
from snnexp.train import run


def test_reverb_neuron_emits_its_membrane_potential_when_it_fires():
    x = torch.tensor([[0.4], [1.0], [2.5], [0.2]])  # [T, 1]
    neuron = ReverBLIF(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=False)
    # u = 0.5 u + x; O = u if u >= 1 else 0; hard reset to 0 after firing
    u, expected = 0.0, []
    for xt in x[:, 0].tolist():
        u = 0.5 * u + xt
        expected.append(u if u >= 1.0 else 0.0)
        u = 0.0 if u >= 1.0 else u
    assert torch.allclose(neuron(x)[:, 0], torch.tensor(expected))


def test_reverb_neuron_config_composes_and_trains(tmp_path):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=convnet", "model.binary_weights=true",
                          "neuron=reverb"], tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
