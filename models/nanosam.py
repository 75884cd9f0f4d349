"""NanoSAM's image encoder (NVIDIA-AI-IOT/nanosam ``TimmImageEncoder('resnet18')``), official key names.

    backbone   timm ``resnet18(features_only=True)``: conv1/bn1/act1/maxpool + layer1..layer4
               (BasicBlocks); only the last feature map is used (512 ch, stride 32 -> 32x32 at 1024^2)
    up_1       Conv3x3 512->256, GELU, Conv3x3, GELU, Conv3x3, GELU, ConvTranspose(k3, s2, p1, op1), GELU
    proj       Conv3x3 256->256, GELU, Conv1x1 256->256
    + pos_embedding [1, 256, 64, 64] (a learned Parameter)

State-dict keys (NanoSAM's own files have no ``image_encoder.`` prefix): ``pos_embedding``,
``backbone.{conv1,bn1,layer1..4}.*``, ``up_1.{0,2,4,6}.*``, ``proj.{0,2}.*`` -- 133 keys, 15.83M
parameters. The ResNet-18 is written here with timm's module names (timm is a test-only oracle,
not a dependency): ``tests/test_nanosam.py`` checks keys, shapes and outputs against
``timm.create_model('resnet18', features_only=True)``.

Input: the NORMALISED image ``[B, 3, 1024, 1024]`` (``Sam.encode`` normalises the 0..255 input
first, as for every family) -> ``[B, 256, 64, 64]``.

Preprocessing: our PyTorch export of this variant uses samdeploy's contract (SamPredictor's PIL
bilinear antialiased resize with ``int(x + 0.5)`` rounding, SAM mean/std, padding that is 0 after
normalisation). NanoSAM's own predictor (``nanosam/utils/predictor.py``) resizes with PIL's default
filter, BICUBIC, and ``int()`` truncation of the short side, then zero-pads after normalising; the
difference is at most one pixel row and the filter kernel. ``samdeploy import`` records NanoSAM's
recipe in the imported model's contract provenance (``export/importer.py``).

Upstream publishes only ONNX files (``resnet18_image_encoder.onnx``, opset 16, input ``image``,
output ``image_embeddings``, normalised input); no PyTorch checkpoint is released, so
``samdeploy import`` is the way to deploy the official weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NanoSamImageEncoder", "ResNet18Features", "nanosam_encoder"]

_RESNET18_LAYERS = (2, 2, 2, 2)
_RESNET_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """timm's ``BasicBlock`` (eval form: drop_block / aa / drop_path are identities, so not built)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class ResNet18Features(nn.Module):
    """timm ``resnet18(features_only=True)``'s modules, returning only the stride-32 feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(_RESNET18_LAYERS, _RESNET_WIDTHS)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            inplanes = planes
        self.out_channels = inplanes

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class NanoSamImageEncoder(nn.Module):
    """NanoSAM's ResNet-18 encoder: normalised ``[B,3,1024,1024]`` -> ``[B,256,64,64]``."""

    def __init__(self, img_size: int = 1024, neck_channels: int = 256, feature_dim: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.backbone = ResNet18Features()
        c = self.backbone.out_channels
        self.up_1 = nn.Sequential(
            nn.Conv2d(c, neck_channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(neck_channels, neck_channels, 3, 2, 1, 1),
            nn.GELU(),
        )
        self.proj = nn.Sequential(
            nn.Conv2d(neck_channels, neck_channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(neck_channels, feature_dim, 1, padding=0),
        )
        grid = img_size // 16  # stride 32 backbone, one x2 transposed conv
        # upstream initialises it as 1e-5 * randn; the value always comes from weights
        self.pos_embedding = nn.Parameter(torch.zeros(1, feature_dim, grid, grid))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.up_1(self.backbone(x))) + self.pos_embedding


def nanosam_encoder(input_size: int = 1024) -> NanoSamImageEncoder:
    return NanoSamImageEncoder(img_size=input_size)


def encoder_for(variant) -> NanoSamImageEncoder:
    """The variant table's builder hook (``Variant.builder``)."""
    return nanosam_encoder(variant.input_size)
