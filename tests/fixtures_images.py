"""Real photographs for tests: the scikit-image sample photographs (bundled with the package)."""

from __future__ import annotations

import numpy as np
import pytest


def sample_photos() -> dict[str, np.ndarray]:
    """Name -> HxWx3 uint8 RGB photograph (the same set `samdeploy check` uses by default)."""
    from samdeploy.images import default_photographs

    return default_photographs()


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return sample_photos()
