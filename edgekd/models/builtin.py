"""Built-in models that give pruning and quantization real variety: a plain
CNN, a CIFAR-style ResNet (residual adds) and a MobileNetV2-style network
(depthwise convolutions, inverted residuals). All take `in_channels` and
`num_classes` from the dataset and work on any input size ≥ 8×8."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models.registry import card, models


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu6: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True),
    )


class PlainCNN(nn.Module):
    """conv-bn-relu blocks, a max-pool between widths, global pooling, a linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for level in range(depth):
            cout = width * 2**level
            layers += [conv_bn_relu(cin, cout), conv_bn_relu(cout, cout)]
            if level < depth - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetS(nn.Module):
    """CIFAR-style ResNet: depth = 6n + 2 (8, 14, 20, …), three stages of widths w, 2w, 4w."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, depth: int = 8, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"resnet_s depth must be 6n+2 with n ≥ 1 (8, 14, 20, …), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = conv_bn_relu(in_channels, width)
        stages: list[nn.Module] = []
        cin = width
        for index, cout in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(cin, cout, stride))
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu(cin, hidden, 1, relu6=True))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, relu6=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _round_channels(value: float, divisor: int = 8) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class MobileNetS(nn.Module):
    """MobileNetV2-style: depthwise separable inverted residuals, sized for 28×28 to 64×64 inputs."""

    # (expansion, output channels, repeats, stride of the first block)
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1))

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0):
        super().__init__()
        stem = _round_channels(16 * width_mult)
        layers: list[nn.Module] = [conv_bn_relu(in_channels, stem, relu6=True)]
        cin = stem
        for expand, channels, repeats, stride in self.settings:
            cout = _round_channels(channels * width_mult)
            for index in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if index == 0 else 1, expand))
                cin = cout
        last = _round_channels(128 * width_mult)
        layers.append(conv_bn_relu(cin, last, 1, relu6=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@models.register
@card(tiny="cnn(width=4)")
def cnn(in_channels: int = 1, num_classes: int = 10, width: int = 16, depth: int = 2) -> nn.Module:
    """Plain CNN: `depth` levels of two conv-bn-relu blocks, widths width·2^level."""
    return PlainCNN(in_channels, num_classes, width, depth)


@models.register
@card(tiny="resnet_s(width=8)")
def resnet_s(in_channels: int = 1, num_classes: int = 10, depth: int = 8, width: int = 16) -> nn.Module:
    """CIFAR-style ResNet with residual adds (depth 6n+2)."""
    return ResNetS(in_channels, num_classes, depth, width)


@models.register
@card(tiny="mobilenet_s(width_mult=0.5)")
def mobilenet_s(in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2-style network with depthwise convolutions and inverted residuals."""
    return MobileNetS(in_channels, num_classes, width_mult)
