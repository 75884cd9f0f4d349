"""Checkpoint integrity: zip CRC errors, non-finite weights and pickled payloads are refused with
typed errors that say what is wrong (and, for pickles, how to opt in with --trust-pickle)."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch
from torch import nn

from samdeploy.errors import CheckpointError, UnsafeCheckpointError
from samdeploy.models.checkpoint import load_checkpoint, read_state_dict


def _tiny_sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(8, 8, generator=g), "a.bias": torch.randn(8, generator=g),
            "b.weight": torch.randn(4, 8, generator=g), "steps": torch.tensor([3])}


def _member_data_offset(path, member: str) -> tuple[int, int]:
    """(offset of the member's data in the file, its compressed size)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    assert header[:4] == b"PK\x03\x04"
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def _weight_member(path) -> str:
    with zipfile.ZipFile(path) as zf:
        data = [i for i in zf.infolist() if "/data/" in i.filename and i.file_size >= 64]
    return max(data, key=lambda i: i.file_size).filename


def test_zip_crc_error_is_refused_naming_the_member(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(_tiny_sd(), path)
    read_state_dict(path)  # the intact file loads
    member = _weight_member(path)
    offset, size = _member_data_offset(path, member)
    raw = bytearray(path.read_bytes())
    assert raw[offset:offset + 16] != bytes(16)
    raw[offset:offset + 16] = bytes(16)  # zero 16 weight bytes, leave the CRC as it was
    bad = tmp_path / "crc.pth"
    bad.write_bytes(bytes(raw))
    # torch itself does not check CRCs: it loads the changed weights silently
    changed = torch.load(bad, weights_only=True)
    assert any(not torch.equal(changed[k], v) for k, v in _tiny_sd().items())
    with pytest.raises(CheckpointError) as err:
        read_state_dict(bad)
    msg = str(err.value)
    assert "CRC" in msg and "corrupt" in msg and member in msg and "re-download" in msg
    assert not isinstance(err.value, UnsafeCheckpointError)


def test_crc_error_cli_exit_2(tmp_path, capsys):
    from samdeploy.cli.main import main

    path = tmp_path / "ckpt.pth"
    torch.save(_tiny_sd(), path)
    offset, _ = _member_data_offset(path, _weight_member(path))
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 16] = bytes(16)
    path.write_bytes(bytes(raw))
    assert main(["models", "inspect", str(path)]) == 2
    assert "CRC" in capsys.readouterr().err


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad_value):
    sd = _tiny_sd()
    sd["a.bias"][3] = bad_value
    sd["b.weight"][:] = bad_value
    path = tmp_path / "nan.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert "non-finite" in msg and "a.bias" in msg and "b.weight" in msg and "2 tensor(s)" in msg


def test_nan_model_checkpoint_is_refused_by_load_checkpoint(tmp_path):
    from samdeploy.models.build import build_model

    sd = build_model("mobile_sam").state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd = {k: v.clone() for k, v in sd.items()}
    sd[key].fill_(float("nan"))
    path = tmp_path / "mobile_nan.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="NaN") as err:
        load_checkpoint(path)
    assert key in str(err.value)


class _Payload:  # a custom class: needs weights_only=False to unpickle
    def __init__(self) -> None:
        self.w = torch.zeros(3)


@pytest.mark.parametrize("kind", ["custom_object", "module", "module_in_dict", "legacy_module", "plain_pickle"])
def test_pickled_payload_is_described_as_pickle_with_trust_hint(tmp_path, kind):
    import pickle

    path = tmp_path / f"{kind}.pth"
    if kind == "custom_object":
        torch.save(_Payload(), path)
    elif kind == "module":
        torch.save(nn.Linear(2, 2), path)
    elif kind == "module_in_dict":
        torch.save({"model": nn.Linear(2, 2)}, path)
    elif kind == "legacy_module":
        torch.save(nn.Linear(2, 2), path, _use_new_zipfile_serialization=False)
    else:  # pickle.dump, not torch.save: torch's weights-only reader says "Unsupported operand"
        with open(path, "wb") as fh:
            pickle.dump(_Payload(), fh, protocol=4)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert "pickled Python objects" in msg and "--trust-pickle" in msg
    assert "damaged" not in msg


def test_trusted_module_still_loads(tmp_path):
    path = tmp_path / "lin.pth"
    torch.save(nn.Linear(2, 2), path)
    sd, container = read_state_dict(path, trust_pickle=True)
    assert set(sd) == {"weight", "bias"} and container == "pickled module"
