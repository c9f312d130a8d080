"""Models for the gradient strategies: an MLP for MNIST-like inputs, a reduced ResNet-18 for 32x32 colour."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from clbench.errors import UserError


class MLP(nn.Module):
    """Flatten -> [Linear -> (BatchNorm) -> ReLU -> (Dropout)] x len(hidden) -> Linear."""

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (1000, 1000),
                 dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return F.relu(out + self.short(x))


class ResNet(nn.Module):
    """Reduced ResNet-18 (Lopez-Paz & Ranzato 2017): 4 stages of 2 basic blocks, ``nf`` base width."""

    def __init__(self, in_channels: int, n_classes: int, nf: int = 20) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))
        stages = []
        cin = nf
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = nf * mult
            stride = 1 if i == 0 else 2
            stages += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


MODELS = ("auto", "mlp", "resnet")


def build_model(kind: str, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (1000, 1000),
                dropout: float = 0.0, batchnorm: bool = False, width: int = 20) -> nn.Module:
    """``auto`` picks the ResNet for 3-channel images of at least 16x16, the MLP otherwise."""
    if kind not in MODELS:
        raise UserError(f"unknown model {kind!r}; valid: {', '.join(MODELS)}")
    if kind == "auto":
        kind = "resnet" if len(input_shape) == 3 and input_shape[0] == 3 and min(input_shape[1:]) >= 16 else "mlp"
    if kind == "resnet":
        if len(input_shape) != 3:
            raise UserError(f"model resnet needs image inputs (C, H, W), got shape {tuple(input_shape)}; use model: mlp")
        return ResNet(input_shape[0], n_classes, nf=width)
    return MLP(math.prod(input_shape), n_classes, hidden, dropout, batchnorm)
