"""NanoSAM (NVIDIA-AI-IOT/nanosam): ResNet-18 encoder with the official key names, MobileSAM's decoder.

Oracle: timm's ``resnet18(features_only=True)`` (what NanoSAM's ``TimmImageEncoder`` builds) plus the
official neck, assembled here the way ``nanosam/models/timm_image_encoder.py`` does; key/param counts
from models.md §3.7 (133 keys, 15.83M parameters)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samdeploy.cli.main import main
from samdeploy.models.build import build_model, random_model

timm = pytest.importorskip("timm")


class OfficialTimmImageEncoder(nn.Module):
    """NanoSAM's TimmImageEncoder('resnet18') (pretrained=False), as in the upstream file."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model("resnet18", pretrained=False, features_only=True)
        c = self.backbone.feature_info.channels()[-1]
        self.up_1 = nn.Sequential(nn.Conv2d(c, 256, 3, padding=1), nn.GELU(), nn.Conv2d(256, 256, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(256, 256, 3, padding=1), nn.GELU(), nn.ConvTranspose2d(256, 256, 3, 2, 1, 1),
                                  nn.GELU())
        self.proj = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.GELU(), nn.Conv2d(256, 256, 1, padding=0))
        self.register_parameter("pos_embedding", nn.Parameter(1e-5 * torch.randn(1, 256, 64, 64)))

    def forward(self, x):
        x = self.backbone(x)
        return self.proj(self.up_1(x[-1])) + self.pos_embedding


def test_keys_shapes_and_parameter_count_match_the_official_encoder():
    ours = build_model("nanosam", device="meta").image_encoder
    official = OfficialTimmImageEncoder()
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert list(got) == list(want) and got == want
    assert len(got) == 133
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in official.parameters()) and round(n / 1e6, 2) == 15.83
    prefixes = {k.split(".")[0] for k in got}
    assert prefixes == {"pos_embedding", "backbone", "up_1", "proj"}
    assert {k.split(".")[1] for k in got if k.startswith("backbone.")} == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert {k.split(".")[1] for k in got if k.startswith(("up_1.", "proj."))} == {"0", "2", "4", "6"}
    # the full model: image_encoder.<NanoSAM keys> + MobileSAM's prompt encoder / mask decoder
    full = build_model("nanosam", device="meta").state_dict()
    mobile = build_model("mobile_sam", device="meta").state_dict()
    assert {k for k in full if not k.startswith("image_encoder.")} == {k for k in mobile if not k.startswith("image_encoder.")}
    assert {k[len("image_encoder."):] for k in full if k.startswith("image_encoder.")} == set(got)


def test_forward_equals_the_official_encoder():
    sam = random_model("nanosam", seed=0)
    official = OfficialTimmImageEncoder().eval()
    official.load_state_dict(sam.image_encoder.state_dict(), strict=True)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = sam.image_encoder(x), official(x)
    assert a.shape == (1, 256, 64, 64)
    assert float((a - b).norm() / b.norm()) < 1e-6


def test_export_and_check_pass_fp32(tmp_path, capsys):
    out = tmp_path / "nanosam"
    assert main(["export", "--model", "nanosam", "--random-weights", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"encoder.onnx", "decoder.onnx", "manifest.json"}
    capsys.readouterr()
    rc = main(["check", str(out), "--max-images", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and "PASS" in text, text
