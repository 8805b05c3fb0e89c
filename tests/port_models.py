"""Small torch models built the way published architectures build them, for the whole-model port check.

Each function builds its model from a seed (torch's default initialisation, nothing downloaded) and
returns it in eval mode; `MODELS` maps a name to (builder, input shape with the batch left out).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointNet(nn.Module):
    """PointNet (Qi et al.): a shared per-point MLP (1x1 Conv1d), a global max pool over points, a classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 32, 1)
        self.conv2 = nn.Conv1d(32, 64, 1)
        self.conv3 = nn.Conv1d(64, 128, 1)
        self.fc1 = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(2, 1)  # (batch, points, xyz) -> (batch, xyz, points), as PointNet's training loop does
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = torch.max(x, 2)[0]
        return self.fc2(F.relu(self.fc1(x)))


class Chomp1d(nn.Module):
    """locuslab/TCN: drop the last `chomp_size` positions, which the symmetric padding added (causal conv)."""

    def __init__(self, chomp_size: int):
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-self.chomp_size].contiguous()


class TemporalBlock(nn.Module):
    """locuslab/TCN's residual block: (dilated conv, chomp, ReLU, dropout) twice, plus the residual, then ReLU."""

    def __init__(self, n_inputs: int, n_outputs: int, kernel_size: int, stride: int, dilation: int, padding: int,
                 dropout: float = 0.2):
        super().__init__()
        self.conv1 = nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation)
        self.chomp1 = Chomp1d(padding)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation)
        self.chomp2 = Chomp1d(padding)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TCN(nn.Module):
    """locuslab/TCN's TemporalConvNet (dilations 1, 2, 4, ...) with a pooled linear head."""

    def __init__(self, num_inputs: int, num_channels: list[int], classes: int, kernel_size: int = 3):
        super().__init__()
        layers = []
        for i, channels in enumerate(num_channels):
            dilation = 2 ** i
            in_channels = num_inputs if i == 0 else num_channels[i - 1]
            layers.append(TemporalBlock(in_channels, channels, kernel_size, stride=1, dilation=dilation,
                                        padding=(kernel_size - 1) * dilation))
        self.network = nn.Sequential(*layers)
        self.linear = nn.Linear(num_channels[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.network(x).mean(2))


class LeNet(nn.Module):
    """LeNet-5's layout with stride-2 convolutions in place of its subsampling layers."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, stride=2), nn.GELU(),  # 28 -> 12
            nn.Conv2d(6, 16, 5, stride=2, padding=2), nn.ReLU(),  # 12 -> 6
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 84), nn.ReLU(), nn.Linear(84, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class M5(nn.Module):
    """M5 (Dai et al., 'Very deep CNNs for raw waveforms'): a wide strided Conv1d front end on raw audio."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 16, stride=4)  # 256 -> 61
        self.conv2 = nn.Conv1d(8, 16, 3, stride=2)  # 61 -> 30
        self.conv3 = nn.Conv1d(16, 16, 3, padding="same")  # 30 -> 30
        self.conv4 = nn.Conv1d(16, 32, 4, stride=2, padding=1)  # 30 -> 15
        self.fc = nn.Linear(32 * 15, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        x = self.conv3(x).sigmoid()
        x = F.gelu(self.conv4(x), approximate="tanh")
        return self.fc(x.flatten(1))


def _seeded(cls, seed: int, *args, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return cls(*args, **kwargs).eval()


def pointnet(seed: int = 0) -> nn.Module:
    return _seeded(PointNet, seed)


def tcn(seed: int = 0) -> nn.Module:
    return _seeded(TCN, seed, 4, [16, 16, 16], 5, kernel_size=3)


def lenet(seed: int = 0) -> nn.Module:
    return _seeded(LeNet, seed)


def m5(seed: int = 0) -> nn.Module:
    return _seeded(M5, seed)


MODELS = {"pointnet": (pointnet, (64, 3)), "tcn": (tcn, (4, 32)), "lenet": (lenet, (1, 28, 28)), "m5": (m5, (1, 256))}
