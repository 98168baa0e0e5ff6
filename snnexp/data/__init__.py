"""Datamodules: static images (digits, CIFAR-10/100, ImageNet), event streams turned into frames
(CIFAR10-DVS, DVS Gesture, N-MNIST, synthetic_dvs) and point clouds (ModelNet40/10). See
``base.SNNDataModule`` for the contract."""

from snnexp.data.augment import TETAugment
from snnexp.data.base import SNNDataModule, time_major_collate
from snnexp.data.cifar10dvs import CIFAR10DVSDataModule
from snnexp.data.digits import DigitsDataModule
from snnexp.data.dvsgesture import DVSGestureDataModule
from snnexp.data.event_module import EventDataModule
from snnexp.data.events import EventFrameDataset, FrameCache, FrameSpec, events_to_frames
from snnexp.data.modelnet import ModelNet10DataModule, ModelNet40DataModule
from snnexp.data.nmnist import NMNISTDataModule
from snnexp.data.synthetic import SyntheticDVSDataModule
from snnexp.data.vision import CIFAR10DataModule, CIFAR100DataModule, ImageNetDataModule

__all__ = [
    "SNNDataModule",
    "EventDataModule",
    "time_major_collate",
    "DigitsDataModule",
    "SyntheticDVSDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ImageNetDataModule",
    "CIFAR10DVSDataModule",
    "DVSGestureDataModule",
    "NMNISTDataModule",
    "ModelNet40DataModule",
    "ModelNet10DataModule",
    "EventFrameDataset",
    "FrameCache",
    "FrameSpec",
    "events_to_frames",
    "TETAugment",
]
