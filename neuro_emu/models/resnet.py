"""ResNet-18 for CIFAR-10: a 3x3 stem and no max-pool, torchvision's module structure otherwise.

Module names and nesting follow ``torchvision.models.resnet`` (``conv1, bn1, relu, maxpool,
layer1..layer4`` of ``BasicBlock(conv1, bn1, relu, conv2, bn2, downsample)``, ``avgpool, fc``), so
code written for a torchvision ResNet, and torchvision-built models, go through conversion alike.
As in torchvision, a block calls its one ``relu`` module twice; conversion gives each call site a
neuron of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Activation = Callable[[], nn.Module]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN stages with an identity (or 1x1 conv-BN) shortcut, summed before the last
    activation: ``[B, cin, H, W] -> [B, cout, H / stride, W / stride]``."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = activation()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """``x: [B, 3, 32, 32] -> logits [B, num_classes]`` with ``blocks`` BasicBlocks per stage."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        activation: Activation,
        *,
        num_classes: int = 10,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = activation()
        self.maxpool = nn.Identity()  # CIFAR variant: 32x32 inputs keep their resolution
        cin = channels[0]
        for index, (count, cout) in enumerate(zip(blocks, channels, strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(cin, cout, stride if block == 0 else 1, activation))
                cin = cout
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(activation: Activation = nn.ReLU, **kwargs) -> ResNet:
    """The CIFAR-10 ResNet-18: stages of 2 BasicBlocks at 64/128/256/512 channels (x width)."""
    return ResNet((2, 2, 2, 2), activation, **kwargs)
