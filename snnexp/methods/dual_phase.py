"""Dual-phase conversion (Wang, Lian, Zhang, Tang et al. 2022; Windere/snn-cvt-dual-phase): phase I trains the
ANN with the trainable-threshold quantise-clip activation (QCFS); phase II initialises the membranes from the rate
error and calibrates each layer's weights by BPTT with a KL loss (see :mod:`snnexp.methods.convert` for the rest).
"""

from __future__ import annotations

from snnexp.methods.convert import Convert
from snnexp.training import calibration


class DualPhase(Convert):
    """Dual-phase conversion: QCFS-style trainable quantise-clip ANN, then membrane initialisation from the rate
    error and layer-wise BPTT weight calibration with a KL loss on ``calib_samples`` samples."""

    def __init__(self, levels: int = 8, threshold_init: float | None = None, shift: bool = True,
                 calib_samples: int = 256, calib_iterations: int = 100, calib_lr: float = 1e-4,
                 ann_ckpt: str | None = None, label_smoothing: float = 0.0):
        super().__init__(activation="qcfs", levels=levels, threshold_init=threshold_init, threshold="trained",
                         shift=shift, calibration="advanced", weight_calibration=True, calib_samples=calib_samples,
                         calib_iterations=calib_iterations, calib_lr=calib_lr, ann_ckpt=ann_ckpt,
                         label_smoothing=label_smoothing)

    def _calibrate(self, model, ann_outputs, run) -> None:
        order, feeding = calibration.neurons_in_order(model, run)
        calibration.correct(model, order, ann_outputs, run, self.snn_T, bias=False, potential=True)
        calibration.calibrate_weights(model, order, feeding, ann_outputs, run, self._iterations, self.calib_lr,
                                      loss="kl")

    def _name(self) -> str:
        return "dual_phase"
