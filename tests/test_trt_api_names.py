"""Every TensorRT name our code uses exists in the real TensorRT Python API of every version whose
code path uses it (surfaces recorded from the real bindings by scripts/record_trt_api.py).

Names used inside functions whose name ends in ``_trt10`` (weak typing: BuilderFlag.FP16,
layer.precision, ...) must exist in every recorded TensorRT 10.x; everything else in every version."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SURFACES = {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in sorted((ROOT / "trt" / "api_surface").glob("tensorrt-*.json"))}

# variable name (local or self.<name>) -> TensorRT class, per module
VARIABLES = {
    "trt/build.py": {"builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
                     "parser": "OnnxParser", "profile": "IOptimizationProfile", "layer": "ILayer",
                     "cache": "ITimingCache", "t": "ITensor", "logger": "Logger"},
    "runtime/backends/tensorrt.py": {"_engine": "ICudaEngine", "_context": "IExecutionContext", "_runtime": "Runtime",
                                     "_logger": "Logger"},
}
# methods called on the result of another call: (receiver method, TRT class of its result)
CALL_RESULTS = {"get_layer": "ILayer", "get_output": "ITensor", "get_input": "ITensor", "get_timing_cache": "ITimingCache",
                "get_error": None}


def used_names(relpath):
    """{(kind, owner, name, trt10_only)}: kind 'module' (trt.X[.Y]) or 'attr' (instance attribute)."""
    tree = ast.parse((ROOT / relpath).read_text())
    variables = VARIABLES[relpath]
    out = set()

    def visit(node, trt10_only):
        for child in ast.iter_child_nodes(node):
            flag = trt10_only or (isinstance(child, ast.FunctionDef) and child.name.endswith("_trt10"))
            if isinstance(child, ast.Attribute):
                base = child.value
                if isinstance(base, ast.Name) and base.id == "trt":
                    out.add(("module", "", child.attr, flag))
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "trt":
                    out.add(("member", base.attr, child.attr, flag))
                elif isinstance(base, ast.Name) and base.id in variables:
                    out.add(("attr", variables[base.id], child.attr, flag))
                elif (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "self"
                      and base.attr in variables):
                    out.add(("attr", variables[base.attr], child.attr, flag))
                elif (isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute)
                      and CALL_RESULTS.get(base.func.attr)):
                    out.add(("attr", CALL_RESULTS[base.func.attr], child.attr, flag))
            visit(child, flag)

    visit(tree, False)
    return out


def _exists(surface, kind, owner, name):
    if kind == "module":
        return name in surface["module_names"]
    if kind == "member":
        return owner in surface["classes"] and name in surface["classes"][owner]
    return owner in surface["classes"] and name in surface["classes"][owner]


def test_surfaces_were_recorded_from_real_packages():
    assert {"10.3.0", "11.4.0.106"} <= set(SURFACES)
    for version, s in SURFACES.items():
        assert s["version"] == version and "tensorrt-cu12-bindings==" + version in s["obtained"]["package"]
        assert len(s["obtained"]["wheel_sha256"]) == 64 and len(s["classes"]) > 150
    # the surfaces really differ where NVIDIA says they do (TRT 11 removed weak typing)
    assert "FP16" in SURFACES["10.3.0"]["enums"]["BuilderFlag"]
    assert "FP16" not in SURFACES["11.4.0.106"]["enums"]["BuilderFlag"]
    assert "set_output_type" not in SURFACES["11.4.0.106"]["classes"]["ILayer"]
    assert "IInt8EntropyCalibrator2" not in SURFACES["11.4.0.106"]["classes"]


@pytest.mark.parametrize("relpath", sorted(VARIABLES))
def test_every_trt_name_exists_where_it_is_used(relpath):
    names = used_names(relpath)
    assert len(names) > 10, names  # the collector found our TensorRT calls
    missing = []
    for kind, owner, name, trt10_only in sorted(names):
        for version, surface in SURFACES.items():
            if trt10_only and not version.startswith("10."):
                continue
            if not _exists(surface, kind, owner, name):
                missing.append(f"{kind} {owner}.{name} missing in TensorRT {version}")
    assert not missing, "\n".join(missing)


def test_weak_typing_names_are_confined_to_trt10_functions():
    names = used_names("trt/build.py")
    weak = {("member", "BuilderFlag", "FP16"), ("member", "BuilderFlag", "INT8"),
            ("member", "BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"), ("attr", "ILayer", "set_output_type"),
            ("attr", "ILayer", "precision")}
    used = {(k, o, n): f for k, o, n, f in names}
    for key in weak:
        assert key in used, f"{key} not found by the collector"
        assert used[key] is True, f"{key} is used outside a *_trt10 function"
    # and the build never takes the weak path on TensorRT 11 (plan_build tests cover this too)
    from samdeploy.trt.trtexec import TrtexecPlan, trtexec_args
    from samdeploy.trt.profiles import Profile
    with pytest.raises(ValueError):
        trtexec_args(TrtexecPlan("a", "b", Profile({"image": ((1,), (1,), (1,))}), 11, "fp16", False))
