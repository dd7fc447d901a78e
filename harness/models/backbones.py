"""Image backbones: a (B, C, H, W) tensor in, a (B, out_dim) embedding out.

- `small`: the seed DeepLense solution's two-conv-plus-pool CNN (with batch norm);
- `tiny`: the same CNN at half the width with a stride-2 first conv, about 8x cheaper to train on a
  CPU; the demo preset's default, so the whole comparison fits a laptop (see bench/RESULTS.md);
- `cnn4`: four VGG-style stages (3x3 conv, batch norm, ReLU, 2x2 max-pool) at full resolution, so
  fine arc detail survives the first layer; a CPU-sized option for substructure, where `tiny` and
  `small` underfit (the study in `datasets/cards/README.md`; about 4x `tiny`'s cost per image);
- `resnet18` / `resnet50`: torchvision models with no hub weights (none can be fetched here) and
  a stem for 64x64 stamps (3x3 stride-1 first conv, no max-pool), as CIFAR-style ResNets do;
- `equivariant`: a shared CNN applied to the four 90-degree rotations of the input with the
  features averaged, so the embedding is exactly invariant to rot90 of the lens.

Convolutional backbones hold their weights and inputs channels-last: oneDNN's fast layout on CPUs
(about 1.4x on a 2-core EPYC) and the tensor-core layout on CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.errors import BadInput

# cnn4's stage widths: the best of the substructure source-validation study (datasets/cards/README.md)
CNN4_WIDTHS = (16, 32, 64, 128)
BACKBONES = ("small", "tiny", "cnn4", "resnet18", "resnet50", "equivariant")


def pool_then_relu() -> list[nn.Module]:
    """2x2 max-pool then ReLU: the same outputs and gradients as ReLU then pool, bit for bit (max
    commutes with the monotone ReLU, and where a window is all <= 0 both give zero gradient), with
    the ReLU on a quarter of the elements. Neither holds weights, so state-dict keys do not change.
    2-8% more `tiny` training images/s on one EPYC core (`python -m bench.cpu_speed`, bench/RESULTS.md)."""
    return [nn.MaxPool2d(2), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Two conv blocks with pooling, then global average pooling and a linear projection."""

    def __init__(self, in_channels: int, out_dim: int = 128, width: int = 32, stem_stride: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(   # ReLU after the pool: the same numbers (see `pool_then_relu`)
            nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1), nn.BatchNorm2d(width),
            *pool_then_relu(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), *pool_then_relu(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.proj = nn.Linear(2 * width, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.net(x.contiguous(memory_format=torch.channels_last)))


class StagedCNN(nn.Module):
    """Stages of 3x3 conv (no bias), batch norm, ReLU and 2x2 max-pool, then global average pooling
    and a linear projection: four stages take a 64-px stamp to 4x4."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *widths[:-1]), widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       *pool_then_relu()]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Linear(widths[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.net(x.contiguous(memory_format=torch.channels_last)))


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet (random init) with a 64x64-friendly stem and no classifier."""

    def __init__(self, depth: int, in_channels: int) -> None:
        import torchvision.models  # on use: importing it takes seconds, and the small CNNs never need it

        super().__init__()
        ctor = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
        net = ctor(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


class Rot90Invariant(nn.Module):
    """Average a shared encoder over the C4 orbit of the input: f(x) = mean_k g(rot90^k x)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        orbit = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)], dim=0)
        return self.encoder(orbit).view(4, b, -1).mean(0)


def make_backbone(name: str, in_channels: int) -> nn.Module:
    """Build a backbone by name (weights channels-last); an unknown name is a BadInput listing the choices."""
    builders = {
        "small": lambda: SmallCNN(in_channels),
        "tiny": lambda: SmallCNN(in_channels, width=16, stem_stride=2),
        "cnn4": lambda: StagedCNN(in_channels, CNN4_WIDTHS),
        "resnet18": lambda: TorchvisionResNet(18, in_channels),
        "resnet50": lambda: TorchvisionResNet(50, in_channels),
        "equivariant": lambda: Rot90Invariant(SmallCNN(in_channels)),
    }
    if name not in builders:
        raise BadInput(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    return builders[name]().to(memory_format=torch.channels_last)
