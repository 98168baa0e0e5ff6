"""Checkpoint files given on the command line (snnexp/checkpoints.py): a real run's checkpoint loads weights-only, and
every damaged or foreign file given to ``resume=`` or ``method.teacher_ckpt=`` is refused in one line naming it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.runs import SHORT, compose_config, run_cli
from snnexp.checkpoints import RESUME_KEYS, CheckpointError, check_resume, load_checkpoint
from snnexp.errors import CorruptFileError
from snnexp.train import build, run


@pytest.fixture(scope="module")
def real_ckpt(ann_teacher) -> Path:
    """checkpoints/last.ckpt of a real short run (`method=ann`, the default convnet on digits)."""
    return Path(ann_teacher())


def damaged(kind: str, good: Path, folder: Path) -> tuple[Path, str]:
    """A file of ``kind`` made from the real checkpoint ``good``, and a fragment its message must hold."""
    path = folder / f"{kind}.ckpt"
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return path, "the file is empty, 0 bytes"
    if kind == "garbage":
        path.write_text("<html>404 Not Found</html>\n")
        return path, "not a PyTorch file"
    if kind == "truncated_half":
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated or corrupt: "
    if kind == "truncated_end":
        path.write_bytes(data[:-20])
        return path, "the zip archive's end record is missing"
    if kind == "flipped_byte":  # torch.load alone reads this one without complaint (asserted below)
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
        return path, "Bad CRC-32"
    if kind == "tensor":
        torch.save(torch.zeros(3), path)
        return path, "it holds a Tensor, not a dict"
    if kind == "no_state_dict":
        torch.save({"epoch": 3, "weights": {"w": torch.zeros(2)}}, path)
        return path, "no pytorch-lightning_version, state_dict"
    if kind == "unsafe_module":
        torch.save(torch.nn.Linear(2, 2), path)
        return path, "holds Python objects that a safe load refuses (torch.nn.modules.linear.Linear)"
    if kind == "numpy_scalar":
        torch.save({"state_dict": {"model.w": torch.zeros(2)}, "score": np.float64(0.5)}, path)
        return path, "numpy"
    raise ValueError(kind)


BAD = ["empty", "garbage", "truncated_half", "truncated_end", "flipped_byte", "tensor", "no_state_dict",
       "unsafe_module", "numpy_scalar"]


def assert_one_line_naming(err: Exception, path: Path, fragment: str, option: str) -> None:
    text = str(err)
    assert len(text.splitlines()) == 1, text
    assert text.startswith(f"{option}: {path}") and fragment in text, text


def test_a_real_runs_checkpoint_loads_weights_only_with_no_extra_safe_globals(real_ckpt):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(real_ckpt) == []
    state = load_checkpoint(real_ckpt, "resume=x", "remedy", required=RESUME_KEYS)
    assert state["state_dict"] and all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())
    assert check_resume(real_ckpt, "resume=x") == str(real_ckpt)


@pytest.mark.parametrize("kind", BAD)
def test_a_damaged_or_foreign_file_is_refused_for_resume_in_one_line(kind, real_ckpt, tmp_path):
    path, fragment = damaged(kind, real_ckpt, tmp_path)
    with pytest.raises(CheckpointError) as info:
        check_resume(path, f"resume={path}")
    assert isinstance(info.value, CorruptFileError)
    assert_one_line_naming(info.value, path, fragment, f"resume={path}")


def test_a_flipped_byte_loads_silently_in_torch_but_fails_its_crc_here(real_ckpt, tmp_path):
    path, _ = damaged("flipped_byte", real_ckpt, tmp_path)
    torch.load(path, map_location="cpu", weights_only=True)  # torch verifies no checksum
    with pytest.raises(CheckpointError, match="Bad CRC-32"):
        load_checkpoint(path, "method.teacher_ckpt=x", "remedy", required=())


def test_a_weights_only_file_cannot_be_resumed_from(real_ckpt, tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": torch.load(real_ckpt, weights_only=True)["state_dict"]}, path)
    with pytest.raises(CheckpointError, match="it holds weights only, without pytorch-lightning_version, "
                                              "optimizer_states, lr_schedulers, so training cannot continue"):
        check_resume(path, f"resume={path}")


def test_cli_resume_from_a_truncated_checkpoint_is_one_error_line(real_ckpt, tmp_path):
    bad, _ = damaged("truncated_half", real_ckpt, tmp_path)
    proc = run_cli(*SHORT, f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snnexp: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"snnexp: error: resume={bad}: {bad} is not a readable checkpoint (truncated or "
                                "corrupt: "), errors[0]


def test_resume_auto_with_a_truncated_last_ckpt_points_at_the_intact_one_next_to_it(real_ckpt, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(real_ckpt.parent, out / "checkpoints")
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    best = next(p.name for p in (out / "checkpoints").glob("best-*.ckpt"))
    with pytest.raises(CheckpointError) as info:
        run(compose_config([*SHORT, "resume=auto"], out))
    assert_one_line_naming(info.value, last, "1,000 bytes and the zip archive's end record is missing", "resume=auto")
    assert f"next to it: {best}" in str(info.value)


@pytest.mark.parametrize("kind", ["empty", "truncated_end", "flipped_byte", "unsafe_module", "tensor"])
def test_a_damaged_teacher_checkpoint_is_refused_in_one_line(kind, real_ckpt, tmp_path):
    path, fragment = damaged(kind, real_ckpt, tmp_path)
    cfg = compose_config(["method=kd", "T=2", f"method.teacher_ckpt={path}"], tmp_path / "run")
    with pytest.raises(CheckpointError) as info:
        build(cfg)
    assert_one_line_naming(info.value, path, fragment, f"method.teacher_ckpt={path}")
    if kind != "unsafe_module":
        assert "train the teacher again with `python -m snnexp method=ann" in str(info.value)


def test_the_intact_teacher_checkpoint_still_loads(real_ckpt, tmp_path):
    cfg = compose_config(["method=kd", "T=2", f"method.teacher_ckpt={real_ckpt}"], tmp_path / "run")
    _, module = build(cfg)
    state = torch.load(real_ckpt, weights_only=True)["state_dict"]
    for key, value in module.method._teacher.net.state_dict().items():
        torch.testing.assert_close(value, state[f"model.{key}"], msg=key)
