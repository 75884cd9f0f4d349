"""Engine manifests: written with everything needed, and engines from another TensorRT/GPU refused
before anything is deserialised."""

import json

import pytest

from samdeploy._io import sha256_file
from samdeploy.contract import DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_POINT_COORDS, ENCODER_OUTPUT, ModelContract
from samdeploy.errors import BackendUnavailableError, ContractError, EngineMismatchError
from samdeploy.trt import environment as envmod
from samdeploy.trt.environment import Environment
from samdeploy.trt.manifest import (
    EngineManifest, check_compatible, load_checked, manifest_path, read_manifest, same_trt_version,
    verify_engine_file, write_manifest,
)
from samdeploy.trt.profiles import decoder_ranges, make_profile

ORIN = Environment(tensorrt="10.3.0", cuda_runtime="12.6", cudnn="9.3.0", gpu_name="Orin", compute_capability="8.7",
                   l4t="36.4.3", jetpack="6.2")


def fake_engine(tmp_path, env=ORIN, role="decoder", precision="fp16"):
    """An 'engine' file (arbitrary bytes: never deserialised here) and its manifest."""
    c = ModelContract(family="mobile_sam", variant="mobile_sam", weights_sha256="random:mobile_sam:seed=0")
    engine = tmp_path / f"{role}.engine"
    engine.write_bytes(b"not a real plan, never deserialised")
    prof = make_profile(c, role, decoder_ranges(max_prompts=4, max_points=6), None)
    m = EngineManifest(
        role=role, precision=precision, engine_file=engine.name, engine_sha256=sha256_file(engine),
        source_onnx="decoder.onnx", source_onnx_sha256="0" * 64, contract=c.to_dict(), environment=env.to_dict(),
        profiles=[prof.to_dict()], build_path="trt10-weak",
        io={n: {"mode": "input", "dtype": "DataType.FLOAT"} for n in prof.shapes}
        | {o: {"mode": "output", "dtype": "DataType.FLOAT"}
           for o in ((DECODER_IOU, DECODER_LOW_RES_MASKS) if role == "decoder" else (ENCODER_OUTPUT,))},
    )
    write_manifest(engine, m)
    return engine, m


def test_manifest_roundtrip_has_versions_profiles_contract(tmp_path):
    engine, m = fake_engine(tmp_path)
    assert manifest_path(engine) == str(engine) + ".json"
    raw = json.loads(open(manifest_path(engine)).read())
    assert raw["environment"]["tensorrt"] == "10.3.0" and raw["environment"]["jetpack"] == "6.2"
    assert raw["environment"]["compute_capability"] == "8.7" and raw["precision"] == "fp16"
    assert raw["profiles"][0][DECODER_POINT_COORDS]["max"] == [4, 6, 2]
    back = read_manifest(engine)
    assert back == m and back.model_contract.model_id == "mobile_sam/mobile_sam@random:mobile_sam:seed=0"


def test_same_environment_passes():
    check_compatible(EngineManifest(**_min(ORIN)), Environment(**ORIN.to_dict()))


def _min(env):
    return dict(role="decoder", precision="fp16", engine_file="e", engine_sha256="", source_onnx="", source_onnx_sha256="",
                contract={}, environment=env.to_dict(), profiles=[], build_path="trt10-weak")


@pytest.mark.parametrize("changes, words", [
    ({"tensorrt": "10.16.1.11"}, ["TensorRT 10.3.0 vs 10.16.1.11"]),
    ({"tensorrt": "11.4.0.106"}, ["TensorRT 10.3.0 vs 11.4.0.106"]),
    ({"gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}, ["GPU 'Orin'", "8.7 vs 8.9"]),
    ({"compute_capability": "8.6"}, ["compute capability 8.7 vs 8.6"]),
])
def test_other_trt_or_gpu_is_refused_with_rebuild_hint(changes, words):
    here = Environment(**(ORIN.to_dict() | changes))
    with pytest.raises(EngineMismatchError) as ei:
        check_compatible(EngineManifest(**_min(ORIN)), here, "dec.engine")
    msg = str(ei.value)
    for w in words:
        assert w in msg
    assert "rebuild on this device" in msg and "samdeploy build" in msg and "--precision fp16" in msg


def test_no_tensorrt_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        check_compatible(EngineManifest(**_min(ORIN)), Environment())


def test_version_matching_rules():
    assert same_trt_version("10.3.0", "10.3.0.30") and same_trt_version("10.3.0.30", "10.3.0")
    assert not same_trt_version("10.3.0.30", "10.3.0.26")
    assert not same_trt_version("10.3.0", "10.3.1") and not same_trt_version("10.3", "10.3")


def test_tampered_engine_and_missing_or_foreign_manifest(tmp_path):
    engine, m = fake_engine(tmp_path)
    verify_engine_file(m, str(engine))
    engine.write_bytes(b"something else")
    with pytest.raises(EngineMismatchError, match="does not match its manifest"):
        verify_engine_file(m, str(engine))
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"x")
    with pytest.raises(ContractError, match="no samdeploy manifest"):
        read_manifest(lone)
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"x")
    open(manifest_path(bad), "w").write(json.dumps({"schema": "other/9"}))
    with pytest.raises(ContractError, match="schema"):
        read_manifest(bad)


def test_load_checked_refuses_before_deserialising(tmp_path):
    engine, _ = fake_engine(tmp_path)
    rtx = Environment(tensorrt="10.3.0", gpu_name="NVIDIA GeForce RTX 3060", compute_capability="8.6")
    with pytest.raises(EngineMismatchError):
        load_checked(str(engine), rtx)
    assert load_checked(str(engine), Environment(**ORIN.to_dict())).role == "decoder"


def test_environment_parsers_on_real_formats(tmp_path):
    rel = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    assert envmod.parse_nv_tegra_release(rel) == "36.4.3"
    assert envmod.jetpack_from_l4t("36.4.3").startswith("6.1/6.2")
    assert envmod.parse_dpkg_jetpack("nvidia-jetpack\t6.2+b77\n") == "6.2"
    assert envmod.parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == "MAXN_SUPER (mode 2)"
    f = tmp_path / "nv_tegra_release"
    f.write_text(rel)
    env = envmod.probe(tegra_release_path=str(f))
    assert env.l4t == "36.4.3" and env.is_jetson and env.jetpack
    here = envmod.probe(tegra_release_path=str(tmp_path / "absent"))
    assert here.l4t is None and here.tensorrt is None  # this CI machine: no TensorRT
    assert "TensorRT            not present" in here.lines()
