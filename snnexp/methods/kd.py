"""Distilling the Knowledge in a Neural Network (Hinton, Vinyals, Dean; NIPS 2014 Deep Learning Workshop),
from a trained ANN teacher into the SNN.

    L_KD = (1 - alpha) * CE(z_s, y)  +  alpha * tau^2 * KL( softmax(z_t / tau) || softmax(z_s / tau) )

z_s is the SNN's time-mean logits, z_t the frozen ANN teacher's (a ``method=ann`` checkpoint, see
:mod:`snnexp.training.teacher`). tau^2 keeps the soft term's gradient scale independent of tau (Hinton's
advice). Evaluation uses CE on z_s only; the teacher is not part of the trained model.
"""

from typing import Optional

import torch.nn.functional as F

from snnexp.training.method import Method, accuracy
from snnexp.training.teacher import load_teacher


def kd_loss(student_logits, teacher_logits, target, alpha: float, tau: float):
    """(1 - alpha) CE(z_s, y) + alpha tau^2 KL(softmax(z_t/tau) || softmax(z_s/tau)), batch-mean."""
    ce = F.cross_entropy(student_logits, target)
    kl = F.kl_div(F.log_softmax(student_logits / tau, -1), F.softmax(teacher_logits / tau, -1),
                  reduction="batchmean")
    return (1 - alpha) * ce + alpha * tau ** 2 * kl


class KD(Method):
    """Hinton knowledge distillation from a frozen ANN teacher checkpoint."""

    def __init__(self, teacher_ckpt: Optional[str] = None, teacher_model: Optional[str] = None,
                 alpha: float = 0.5, tau: float = 4.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method.alpha must lie in [0, 1], got {alpha}")
        if tau <= 0:
            raise ValueError(f"method.tau must be positive, got {tau}")
        self.teacher_ckpt = teacher_ckpt
        self.teacher_model = teacher_model
        self.alpha = alpha
        self.tau = tau
        self._teacher = None

    def setup(self, model, datamodule):
        self._teacher = load_teacher(self.teacher_ckpt, model, datamodule, self.teacher_model, "kd")
        return model

    @property
    def teacher(self):
        return self._teacher

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        z_s = self.predict(output)
        z_t = self._teacher(module.encode(x, T=1)).logits.mean(0)
        loss = kd_loss(z_s, z_t, y, self.alpha, self.tau)
        return loss, {"acc": accuracy(z_s, y)}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)
