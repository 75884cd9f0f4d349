"""Checkpoint registry, verified download (offline: file:// fixtures and an unreachable host), and the
`samdeploy models` CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket

import pytest

from samdeploy.cli.main import main as cli_main
from samdeploy.errors import DownloadError, InputError
from samdeploy.models import registry
from samdeploy.models.registry import REGISTRY, Checkpoint, download, download_checkpoint
from samdeploy.models.variants import VARIANTS

PAYLOAD = b"pretend checkpoint bytes " * 4000


def _entry(url: str, **kw) -> Checkpoint:
    base = dict(
        name="fixture", family="sam", variant="vit_b", filename="fixture.pth", url=url,
        size=len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest(), md5=None,
        license="Apache-2.0", source="test/fixture", page="https://example.invalid/page",
    )
    base.update(kw)
    return Checkpoint(**base)


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "upstream" / "fixture.pth"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src.as_uri()


def test_registry_entries_are_consistent():
    for name, c in REGISTRY.items():
        assert c.name == name and c.variant in VARIANTS and VARIANTS[c.variant].family == c.family
        assert c.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", c.sha256)
        assert c.md5 is None or re.fullmatch(r"[0-9a-f]{32}", c.md5)
        assert c.url is None or c.url.startswith("https://")
        assert c.license and c.source and c.page
    # SAM file names carry the first 6 hex digits of the file's MD5
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        c = REGISTRY[name]
        assert c.filename == f"{name}_{c.md5[:6]}.pth"
        assert c.url == "https://dl.fbaipublicfiles.com/segment_anything/" + c.filename
    assert REGISTRY["sam_vit_b"].size == 375_042_383 and REGISTRY["mobile_sam"].size == 40_728_226
    assert {c.variant for c in REGISTRY.values()} == set(VARIANTS)


def test_download_file_url_verifies_and_caches(tmp_path, served):
    entry = _entry(served)
    path = download_checkpoint(entry, tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / "fixture.pth" and path.read_bytes() == PAYLOAD
    # reused from the cache (verified again) even when the source is gone
    (tmp_path / "upstream" / "fixture.pth").unlink()
    assert download_checkpoint(entry, tmp_path / "cache", progress=False) == path
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fixture.pth", "fixture.pth.verified"]
    # a cached file changed after verification is hashed again, found bad and replaced
    path.write_bytes(b"x" * len(PAYLOAD))
    os.utime(path, ns=(10**9, 10**9))  # a different mtime even on coarse-timestamp filesystems
    (tmp_path / "upstream" / "fixture.pth").write_bytes(PAYLOAD)
    assert download_checkpoint(entry, tmp_path / "cache", progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "bad",
    [dict(sha256="0" * 64), dict(size=len(PAYLOAD) + 1), dict(sha256=None, md5="0" * 32)],
    ids=["sha256", "size", "md5"],
)
def test_download_rejects_wrong_hash_or_size_and_keeps_nothing(tmp_path, served, bad):
    with pytest.raises(DownloadError) as err:
        download_checkpoint(_entry(served, **bad), tmp_path / "cache", progress=False)
    assert "not kept" in str(err.value) or "expected" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial or bad file left behind


def test_download_md5_only_entry(tmp_path, served):
    entry = _entry(served, sha256=None, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert download_checkpoint(entry, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_damaged_cached_copy_is_replaced(tmp_path, served):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fixture.pth").write_bytes(PAYLOAD[:100])
    assert download_checkpoint(_entry(served), cache, progress=False).read_bytes() == PAYLOAD


def test_offline_download_says_to_pass_checkpoint(tmp_path):
    # a closed local port: fails immediately, like a machine without network
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        download_checkpoint(_entry(f"http://127.0.0.1:{port}/x.pth"), tmp_path / "c", progress=False, timeout=5)
    assert "--checkpoint PATH" in str(err.value)
    assert not (tmp_path / "c" / "fixture.pth").exists()


def test_offline_env_and_manual_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMDEPLOY_OFFLINE", "1")
    with pytest.raises(DownloadError, match="--checkpoint PATH"):
        download("sam_vit_b", cache_dir=tmp_path, progress=False)
    with pytest.raises(DownloadError, match="Google Drive"):
        download("slimsam_77", cache_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="sam_vit_b"):
        download("sam_vit_x", cache_dir=tmp_path)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMDEPLOY_CACHE", str(tmp_path / "env"))
    assert registry.cache_dir() == tmp_path / "env"
    assert registry.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SAMDEPLOY_CACHE")
    assert registry.cache_dir().parts[-2:] == (".cache", "samdeploy")


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_list(capsys):
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    assert "sha256:ec2df6273261" in out and "manual download" in out
    assert cli_main(["models", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sam_vit_h"] == dataclasses.asdict(REGISTRY["sam_vit_h"])


def test_cli_download_offline_and_unknown(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SAMDEPLOY_OFFLINE", "1")
    assert cli_main(["models", "download", "mobile_sam", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint PATH" in err and "Traceback" not in err
    assert cli_main(["models", "download", "nope"]) == 2
    assert cli_main(["models"]) == 2


def test_cli_download_prints_path(capsys, monkeypatch, tmp_path, served):
    monkeypatch.setitem(REGISTRY, "fixture", _entry(served))
    assert cli_main(["models", "download", "fixture", "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c" / "fixture.pth")


def test_cli_inspect(capsys, official_checkpoint_factory, tmp_path):
    path, _ = official_checkpoint_factory("slimsam_77")
    assert cli_main(["models", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "slimsam_77" and info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert cli_main(["models", "inspect", str(bad)]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
