"""The check prompt suite: contract encoding (padding point, box corners, coordinate frame), determinism."""

from __future__ import annotations

import numpy as np

from samdeploy.check.prompts import CASE_NAMES, Prompt, encode_prompt, mask_feedback, prompt_suite
from samdeploy.contract import ModelContract


def test_prompt_encoding_follows_the_contract():
    c = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    # 600x400 (w x h) image resized to 1024x683: x scales by 1024/600, y by 683/400
    coords, labels = encode_prompt(Prompt(np.array([[300.0, 200.0]]), np.array([1])), (400, 600), (683, 1024), c)
    np.testing.assert_allclose(coords, [[512.0, 341.5], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(labels, [1, -1])  # padding point appended: no box
    coords, labels = encode_prompt(Prompt(np.array([[300.0, 200.0]]), np.array([0]), np.array([0, 0, 600, 400.0])),
                                   (400, 600), (683, 1024), c)
    np.testing.assert_allclose(coords, [[512.0, 341.5], [0.0, 0.0], [1024.0, 683.0]], rtol=1e-6)
    np.testing.assert_array_equal(labels, [0, 2, 3])  # clicks first, then the box corners, no padding


def test_prompt_suite_is_deterministic_and_complete():
    c = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    a = prompt_suite("img", (400, 600), (683, 1024), c, seed=0)
    b = prompt_suite("img", (400, 600), (683, 1024), c, seed=0)
    other = prompt_suite("img", (400, 600), (683, 1024), c, seed=1)
    assert [x.case for x in a] == list(CASE_NAMES)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.point_coords, y.point_coords)
    assert not np.array_equal(a[0].point_coords, other[0].point_coords)
    by = {x.case: x for x in a}
    assert by["batch5"].point_coords.shape == (5, 3, 2)
    assert by["mask_input"].mask_from == "point"
    assert by["multi_point"].point_labels.tolist() == [[1, 1, 0, -1]]
    assert by["box"].point_labels.tolist() == [[2, 3]]
    for x in a:  # every point inside the resized image
        assert (x.point_coords[..., 0] <= 1024).all() and (x.point_coords[..., 1] <= 683).all()
        assert (x.point_coords >= 0).all()


def test_mask_feedback_takes_one_token():
    masks = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3)
    fed = mask_feedback(masks, 2)
    assert fed.shape == (2, 1, 3, 3) and fed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(fed[:, 0], masks[:, 2])
