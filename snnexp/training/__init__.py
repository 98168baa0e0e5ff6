"""What the training methods share: the :class:`Method` interface (:mod:`~snnexp.training.method`), tap probing
(:mod:`~snnexp.training.taps`), the frozen ANN teacher (:mod:`~snnexp.training.teacher`), model surgery
(:mod:`~snnexp.training.surgery`) and MTT's time-step communication (:mod:`~snnexp.training.mixed_time`).
``snnexp/methods/`` holds one paper per file and builds on these."""

from snnexp.training.method import Method, accuracy

__all__ = ["Method", "accuracy"]
