"""Shared pytest setup. Fixtures live in one module per area (fixtures_*.py) so that the people
working on models, export, runtime, calibration and TensorRT do not edit the same file."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Keep the suite within CI's budget on 2 cores and deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from fixtures_images import *  # noqa: E402,F401,F403
from fixtures_models import *  # noqa: E402,F401,F403
from fixtures_export import *  # noqa: E402,F401,F403
from fixtures_runtime import *  # noqa: E402,F401,F403
from fixtures_calibration import *  # noqa: E402,F401,F403
from fixtures_trt import *  # noqa: E402,F401,F403
from fixtures_video import sam2_video_model  # noqa: E402,F401
