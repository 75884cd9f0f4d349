"""Output integrity: file modes follow the umask, stale export staging dirs are cleaned up, an
interrupted re-export keeps the previous export usable, and the runtime verifies manifest hashes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from fixtures_export import copy_export
from samdeploy import _io
from samdeploy.errors import ContractError, SamDeployError
from samdeploy.export import exporter, onnx_io
from samdeploy.export.exporter import ExportOptions, export_model, remove_stale_staging
from samdeploy.export.manifest import read_manifest, verify_files
from samdeploy.export.source import random_source
from samdeploy.runtime.backends import onnxruntime as ort_backend


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _listing(d):
    return sorted(p.name for p in d.iterdir() if p.name != ".samdeploy-verified.json")


def _snapshot(d):
    return {name: _io.sha256_file(d / name) for name in _listing(d)}


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)

    def set_(value: int) -> None:
        os.umask(value)

    yield set_
    os.umask(old)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 1. file modes ------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask, mask, want):
    umask(mask)
    _io.write_bytes_atomic(tmp_path / "a.bin", b"x")
    _io.write_json_atomic(tmp_path / "sub" / "b.json", {"k": 1})
    with _io.atomic_path(tmp_path / "c.onnx") as tmp:
        tmp.write_bytes(b"y")
    with open(tmp_path / "plain.txt", "w") as fh:  # what a normal open() gives
        fh.write("z")
    assert _mode(tmp_path / "plain.txt") == want
    for name in ("a.bin", "sub/b.json", "c.onnx"):
        assert _mode(tmp_path / name) == want, name
    assert _io.current_umask() == mask  # read without changing it
    assert _io.default_dir_mode() == 0o777 & ~mask


# ---- 2. stale staging directories ----------------------------------------------------------------
def test_remove_stale_staging_keeps_live_exports(tmp_path):
    dead = tmp_path / f".samdeploy-export-{_dead_pid()}-abc123"
    live = tmp_path / f".samdeploy-export-{os.getpid()}-def456"
    legacy_old = tmp_path / ".samdeploy-export-k2j3h4"  # no pid: older samdeploy, judged by age
    legacy_new = tmp_path / ".samdeploy-export-q9w8e7"
    other = tmp_path / "encoder.onnx"
    for d in (dead, live, legacy_old, legacy_new):
        (d / "new").mkdir(parents=True)
        (d / "new" / "decoder.onnx").write_bytes(b"partial")
    other.write_bytes(b"keep")
    two_hours_ago = time.time() - 7200
    os.utime(legacy_old, (two_hours_ago, two_hours_ago))

    removed = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead.name, legacy_old.name])
    assert not dead.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists() and other.read_bytes() == b"keep"


# ---- 3. re-export: the previous export stays complete until the new one is in place -------------
@pytest.fixture
def old_export(exported_model_dir, tmp_path):
    """A writable copy of a complete (encoder + decoder) export, without the shared export's hash
    cache (other tests may have opened it; the cache's inode/ctime keys would not match a copy anyway)."""
    d = copy_export(exported_model_dir("mobile_sam"), tmp_path / "model")
    (d / _io.VERIFIED_CACHE_NAME).unlink(missing_ok=True)
    return d


def _assert_complete_and_usable(d, snapshot):
    assert _snapshot(d) == snapshot
    assert not [p for p in d.iterdir() if p.name.startswith(".samdeploy-export-")]
    manifest = read_manifest(d)
    assert verify_files(d, manifest) == []
    enc, dec = ort_backend.find_graphs(str(d))  # the runtime's resolver verifies the hashes too
    assert os.path.basename(enc) == "encoder.onnx" and os.path.basename(dec) == "decoder.onnx"


def test_reexport_interrupted_while_staging_keeps_old_export(old_export, reference_model, monkeypatch):
    before = _snapshot(old_export)
    real_save = onnx_io.save_model

    def interrupted(proto, path, external_data):
        real_save(proto, path, external_data)  # the new file is written (into staging) ...
        raise KeyboardInterrupt("simulated Ctrl-C")  # ... then Ctrl-C

    monkeypatch.setattr(onnx_io, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(reference_model("mobile_sam"), old_export, random_source("mobile_sam", 0),
                     ExportOptions(graphs=("decoder",), external_data="always"))
    _assert_complete_and_usable(old_export, before)


def test_reexport_interrupted_while_swapping_restores_old_export(old_export, reference_model, monkeypatch):
    before = _snapshot(old_export)

    def interrupted(out_dir, manifest):  # new graph files are in place, then Ctrl-C before the manifest
        assert (old_export / "decoder.onnx.data").exists()
        assert "manifest.json" not in _listing(old_export)
        raise KeyboardInterrupt("simulated Ctrl-C")

    monkeypatch.setattr(exporter, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(reference_model("mobile_sam"), old_export, random_source("mobile_sam", 0),
                     ExportOptions(graphs=("decoder",), external_data="always"))
    _assert_complete_and_usable(old_export, before)  # no decoder.onnx.data of the new export


def test_reexport_replaces_files_removes_stale_staging_and_uses_umask_modes(old_export, reference_model, umask):
    umask(0o022)
    dead = old_export / f".samdeploy-export-{_dead_pid()}-zzz"
    (dead / "new").mkdir(parents=True)
    live = old_export / f".samdeploy-export-{os.getpid()}-yyy"
    live.mkdir()
    old_decoder = (old_export / "decoder.onnx").read_bytes()
    res = export_model(reference_model("mobile_sam"), old_export, random_source("mobile_sam", 0),
                       ExportOptions(graphs=("decoder",), external_data="always"))
    assert not dead.exists() and live.exists()
    live.rmdir()
    assert _listing(old_export) == ["decoder.onnx", "decoder.onnx.data", "encoder.onnx", "manifest.json"]
    assert (old_export / "decoder.onnx").read_bytes() != old_decoder
    manifest = read_manifest(old_export)
    assert verify_files(old_export, manifest) == []
    assert res.graphs["decoder"].path == old_export / "decoder.onnx"
    assert [f.path for f in res.graphs["decoder"].files] == [old_export / "decoder.onnx", old_export / "decoder.onnx.data"]
    for name in ("decoder.onnx", "decoder.onnx.data", "manifest.json"):
        assert _mode(old_export / name) == 0o644, name


def test_fresh_export_dir_and_files_have_umask_modes(reference_model, tmp_path, umask):
    umask(0o027)
    out = tmp_path / "new" / "model"
    export_model(reference_model("mobile_sam"), out, random_source("mobile_sam", 0), ExportOptions(graphs=("decoder",)))
    assert _mode(out) == 0o750
    assert _listing(out) == ["decoder.onnx", "manifest.json"]
    for name in ("decoder.onnx", "manifest.json"):
        assert _mode(out / name) == 0o640, name


# ---- 4. the runtime verifies the manifest's hashes ----------------------------------------------
def _flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(data))


def test_bit_flipped_graph_is_refused(old_export):
    ort_backend.find_graphs(str(old_export))  # fine (and now cached)
    time.sleep(0.05)
    _flip_byte(old_export / "encoder.onnx")
    with pytest.raises(ContractError, match="encoder.onnx differs from the manifest") as err:
        ort_backend.find_graphs(str(old_export))
    assert isinstance(err.value, SamDeployError) and "re-run `samdeploy export" in str(err.value)


def test_bit_flip_with_restored_mtime_is_still_refused(old_export):
    ort_backend.find_graphs(str(old_export))
    st = os.stat(old_export / "decoder.onnx")
    time.sleep(0.05)
    _flip_byte(old_export / "decoder.onnx")
    os.utime(old_export / "decoder.onnx", ns=(st.st_atime_ns, st.st_mtime_ns))
    _io._VERIFIED.clear()
    with pytest.raises(ContractError, match="decoder.onnx"):
        ort_backend.find_graphs(str(old_export))


def test_truncated_graph_is_refused(old_export):
    p = old_export / "decoder.onnx"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ContractError, match="bytes, the manifest says"):
        ort_backend.find_graphs(str(old_export))


def test_a_directory_without_manifest_is_refused(old_export):
    (old_export / "manifest.json").unlink()
    with pytest.raises(ContractError, match="no manifest.json") as info:  # nothing says the graphs belong together
        ort_backend.find_graphs(str(old_export))
    assert "--encoder FILE --decoder FILE" in info.value.hint
    (old_export / f".samdeploy-export-{os.getpid()}-abc").mkdir()
    with pytest.raises(ContractError, match="unfinished `samdeploy export`"):
        ort_backend.find_graphs(str(old_export))


def test_explicit_files_work_without_manifest(old_export):
    from samdeploy.runtime import load_model

    (old_export / "manifest.json").unlink()
    pair = load_model(encoder=old_export / "encoder.onnx", decoder=old_export / "decoder.onnx")
    pair.close()


def test_verification_is_cached(old_export, monkeypatch):
    calls = []
    real = _io.sha256_file

    def counting(path, *a, **k):
        calls.append(os.path.basename(path))
        return real(path, *a, **k)

    monkeypatch.setattr(_io, "sha256_file", counting)
    _io._VERIFIED.clear()
    ort_backend.find_graphs(str(old_export))
    assert sorted(calls) == ["decoder.onnx", "encoder.onnx"]
    assert (old_export / _io.VERIFIED_CACHE_NAME).is_file()
    ort_backend.find_graphs(str(old_export))  # in-process cache
    assert len(calls) == 2
    _io._VERIFIED.clear()  # a new process: the cache file answers
    ort_backend.find_graphs(str(old_export))
    assert len(calls) == 2
    # a rewritten file (new mtime) is hashed again; the other one is not
    time.sleep(0.05)
    data = (old_export / "decoder.onnx").read_bytes()
    (old_export / "decoder.onnx").write_bytes(data)
    ort_backend.find_graphs(str(old_export))
    assert sorted(calls) == ["decoder.onnx", "decoder.onnx", "encoder.onnx"]


def test_unwritable_cache_still_verifies(old_export, monkeypatch):
    def no_write(*a, **k):
        raise PermissionError("read-only directory")

    monkeypatch.setattr(_io, "write_json_atomic", no_write)
    _io._VERIFIED.clear()
    ort_backend.find_graphs(str(old_export))
    assert not (old_export / _io.VERIFIED_CACHE_NAME).exists()
    _flip_byte(old_export / "encoder.onnx")
    with pytest.raises(ContractError):
        ort_backend.find_graphs(str(old_export))
