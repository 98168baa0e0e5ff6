"""DVS Gesture (snnexp/data/dvsgesture.py): tonic's .npy and SpikingJelly's .npz layouts, written here and read back."""

import numpy as np
import pytest

from helpers.formats import make_events, write_gesture_npy, write_npz
from snnexp.data import DVSGestureDataModule
from snnexp.data.events import FrameSpec


@pytest.mark.parametrize("layout", ["tonic", "events_np"])
def test_dvsgesture_reads_tonic_npy_and_spikingjelly_npz(tmp_path, layout):
    events = {}
    for split, users in (("train", ("user01_fluorescent", "user02_led")), ("test", ("user24_lab",))):
        for user in users:
            for label in range(11):
                ev = make_events(100, 128, 128, seed=len(events))
                ev["t"] //= 1000  # tonic's release stores milliseconds
                events[(split, user, label)] = ev
                if layout == "tonic":
                    sub = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
                    write_gesture_npy(tmp_path / "DVSGesture" / sub / user / f"{label}.npy", ev)
                else:
                    write_npz(tmp_path / "events_np" / split / str(label) / f"{user}_{label}.npz", ev)
    dm = DVSGestureDataModule(root=str(tmp_path), T=4, size=32, batch_size=6, cache=False)
    assert (dm.input_shape, dm.time_steps, dm.num_classes) == ((2, 32, 32), 4, 11)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 22 and len(dm.test_set) == 11 and dm.val_set is dm.test_set
    assert sorted(dm.train_set.targets) == sorted(list(range(11)) * 2)
    spec = FrameSpec((128, 128, 2), T=4, size=32)
    for i in (0, 5, 21):
        x, y = dm.train_set[i]
        path = dm.train_set.samples[i][0]
        user = path.parent.name if layout == "tonic" else path.stem.rsplit("_", 1)[0]
        np.testing.assert_allclose(x.numpy(), spec(events[("train", user, y)]), rtol=1e-6)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 6, 2, 32, 32)
