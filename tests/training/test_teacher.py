"""The frozen ANN teacher of the distillation methods (snnexp/training/teacher.py): frozen and outside the optimiser
and the checkpoints, a missing checkpoint says how to make one, and a teacher of another shape is refused."""

import pytest
import torch
from hydra.utils import instantiate

from helpers.partners import needs_teacher
from helpers.runs import compose_config, options, student_overrides
from snnexp.errors import IncompatibleError, SnnexpError
from snnexp.train import build

DISTILL = [m for m in options("method") if needs_teacher(m)]  # the methods whose config has teacher_ckpt


@pytest.mark.parametrize("method", DISTILL)
def test_teacher_is_frozen_and_outside_the_optimiser(method, teachers, tmp_path):
    cfg = compose_config([*student_overrides(method, "resnet19", teachers), "data.batch_size=4"], tmp_path / "run")
    datamodule, module = build(cfg)
    teacher = module.method._teacher.net
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert not any(k.startswith("method._teacher") for k in module.state_dict())  # never written into checkpoints
    optimizer = instantiate(cfg.optim)(module.parameters())
    assert not teacher_ids & {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module.train()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, _ = module.method.training_step(module, (x, y))
    loss.backward()
    optimizer.step()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"teacher tensor {k} changed")


def test_missing_teacher_checkpoint_says_how_to_make_one(tmp_path):
    cfg = compose_config(["method=kd", f"method.teacher_ckpt={tmp_path / 'nope.ckpt'}"], tmp_path / "run")
    with pytest.raises(SnnexpError, match=r"python -m snnexp method=ann model=<m> data=<d>"):
        build(cfg)


def test_teacher_of_another_shape_is_refused(teachers, tmp_path):
    cfg = compose_config(["method=kd", "model=convnet", "data=digits", f"method.teacher_ckpt={teachers['resnet19']}"],
                         tmp_path / "run")
    with pytest.raises(IncompatibleError, match="does not fit"):
        build(cfg)


@pytest.mark.parametrize("name", ["sdt_2_512", "sdt_8_384"])
def test_a_named_model_variant_is_a_teacher_model(name, tmp_path):
    """Every conf/model option is a registered name, so ``method.teacher_model=<option>`` builds that architecture
    (here at a small input) and loads a checkpoint of it; the teacher's weights are the checkpoint's."""
    from functools import partial

    from snnexp.models import create_model
    from snnexp.neurons import LIF
    from snnexp.training.surgery import replace_neurons
    from snnexp.training.teacher import load_teacher

    class Data:
        input_shape, num_classes, time_steps = (3, 32, 32), 10, None

    torch.manual_seed(0)
    ann = create_model(name, neuron=partial(LIF), input_shape=Data.input_shape, num_classes=Data.num_classes)
    replace_neurons(ann, torch.nn.ReLU)
    ckpt = tmp_path / "ann.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ann.state_dict().items()}}, ckpt)
    student = create_model("convnet", neuron=partial(LIF), input_shape=Data.input_shape, num_classes=10)
    teacher = load_teacher(str(ckpt), student, Data(), teacher_model=name)
    for key, value in ann.state_dict().items():
        torch.testing.assert_close(teacher.net.state_dict()[key], value, msg=key)
    x = torch.rand(1, 2, 3, 32, 32)
    torch.testing.assert_close(teacher(x).logits, ann.eval()(x).logits)
