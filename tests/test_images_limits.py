"""Image-size budget, extreme aspect ratios, EXIF orientation and load_images keys (no model)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from samdeploy.contract import Preprocess
from samdeploy.errors import InputError, MissingFileError
from samdeploy.images import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    load_image,
    load_images,
    resolve_max_pixels,
    to_rgb_uint8,
)
from samdeploy.runtime.transforms import apply_coords, preprocess_image, resized_shape, upscale_masks


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def header_bomb_png(width: int, height: int) -> bytes:
    """A real tiny PNG whose IHDR claims ``width x height`` (CRC fixed so decoders accept it)."""
    data = bytearray(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(autouse=True)
def _no_env_budget(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


# ---- pixel budget -------------------------------------------------------------------------------
def test_header_bomb_refused_before_decoding(tmp_path):
    f = tmp_path / "bomb.png"
    f.write_bytes(header_bomb_png(60000, 60000))
    with pytest.raises(Image.DecompressionBombError):  # the patched header is valid (Pillow parses it)
        Image.open(f)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="megapixels") as e:
        load_image(f)
    assert time.perf_counter() - t0 < 2.0
    assert MAX_PIXELS_ENV in str(e.value)


def test_header_bomb_refused_even_when_budget_disabled(tmp_path):
    """No limit: the decoder's own refusal becomes a typed error, never a raw cv2.error."""
    f = tmp_path / "bomb.png"
    f.write_bytes(header_bomb_png(60000, 60000))
    with pytest.raises(InputError):
        load_image(f, max_pixels=0)


def test_budget_between_default_and_pil_limit(tmp_path):
    """20000x10000 = 200 MP: over our default and over Pillow's bomb limit -> typed InputError."""
    f = tmp_path / "big.png"
    f.write_bytes(header_bomb_png(20000, 10000))
    with pytest.raises(InputError, match="megapixels"):
        load_image(f)


def test_budget_override_argument_and_env(tmp_path, monkeypatch):
    img = np.full((40, 50, 3), 7, np.uint8)
    f = tmp_path / "small.png"
    f.write_bytes(png_bytes(img))
    assert load_image(f).shape == (40, 50, 3)
    with pytest.raises(InputError, match="budget"):
        load_image(f, max_pixels=1999)
    assert load_image(f, max_pixels=2000).shape == (40, 50, 3)
    with pytest.raises(InputError):
        load_images([str(tmp_path)], max_pixels=100)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(InputError, match="budget"):
        load_image(f)
    with pytest.raises(InputError, match="budget"):
        to_rgb_uint8(img)
    assert load_image(f, max_pixels=5000).shape == (40, 50, 3)  # the argument wins over the env var
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    assert resolve_max_pixels() is None
    assert load_image(f).shape == (40, 50, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match=MAX_PIXELS_ENV):
        load_image(f)


def test_default_budget():
    assert resolve_max_pixels() == DEFAULT_MAX_PIXELS == 50_000_000
    with pytest.raises(InputError):
        resolve_max_pixels(-1)
    with pytest.raises(InputError):
        resolve_max_pixels(1.5)


def test_array_budget_checked_before_conversion():
    """to_rgb_uint8 (what Predictor.set_image calls) refuses big arrays without copying them:
    a broadcast view costs no memory, so this would OOM if the check came after conversion."""
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 6000, 3))  # 60 MP
    with pytest.raises(InputError, match="megapixels"):
        to_rgb_uint8(huge)
    small = np.zeros((10, 10, 3), np.uint8)
    assert to_rgb_uint8(small, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(InputError):
        to_rgb_uint8(small, max_pixels=99)


# ---- extreme aspect ratios ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 3000, 3), (3000, 1, 3), (1, 2049, 3), (2049, 1, 3), (1, 1, 3), (2, 9000, 3)])
@pytest.mark.parametrize("interpolation", ["bilinear_antialias", "bilinear"])
def test_extreme_aspect_ratios_pre_and_post(shape, interpolation):
    rng = np.random.default_rng(0)
    img = to_rgb_uint8(rng.integers(0, 256, shape, dtype=np.uint8))
    pre = Preprocess(interpolation=interpolation)
    x, hw = preprocess_image(img, pre)
    assert x.shape == (1, 3, 1024, 1024) and np.isfinite(x).all()
    assert min(hw) >= 1 and max(hw) == 1024 or shape[:2] == (1, 1)
    assert hw == resized_shape(shape[0], shape[1], 1024)
    low = rng.standard_normal((3, 256, 256)).astype(np.float32)
    for exact in (True, False):
        masks = upscale_masks(low, hw, shape[:2], exact=exact)
        assert masks.shape == (3, *shape[:2]) and masks.dtype == np.bool_
        logits = upscale_masks(low, hw, shape[:2], threshold=None, exact=exact)
        assert logits.shape == (3, *shape[:2]) and np.isfinite(logits).all()
    pts = apply_coords(np.array([[shape[1] - 1, shape[0] - 1]], np.float32), shape[:2], hw)
    assert np.isfinite(pts).all() and (pts <= 1024).all()


def test_resized_shape_unchanged_for_normal_sizes():
    for h, w in [(1080, 1920), (333, 517), (1411, 1411), (1, 300), (2048, 1), (7, 1024)]:
        scale = 1024 / max(h, w)
        assert resized_shape(h, w, 1024) == (int(h * scale + 0.5), int(w * scale + 0.5))
    assert resized_shape(1, 2049, 1024) == (1, 1024)
    assert resized_shape(3000, 1, 1024) == (1024, 1)


def test_extreme_aspect_file_loads(tmp_path):
    f = tmp_path / "line.png"
    f.write_bytes(png_bytes(np.zeros((1, 3000, 3), np.uint8)))
    assert load_image(f).shape == (1, 3000, 3)


# ---- EXIF orientation ---------------------------------------------------------------------------
def _marked(h=60, w=90) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:20, :30] = (255, 0, 0)  # red top-left block
    img[-20:, -30:] = (0, 0, 255)  # blue bottom-right block
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    from PIL import ImageOps

    f = tmp_path / f"o{orientation}.jpg"
    im = Image.fromarray(_marked())
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(f, quality=95, exif=exif)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))
    got = load_image(f)
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 3  # decoder rounding only


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    """A camera held in portrait stores landscape pixels + orientation 6 (rotate 90 CW to view)."""
    upright = _marked(90, 60)  # portrait as the viewer shows it
    stored = np.rot90(upright, 1)  # what the sensor wrote: rotated 90 CCW
    exif = Image.Exif()
    exif[0x0112] = 6
    f = tmp_path / "portrait.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(f, quality=95, exif=exif)
    got = load_image(f)
    assert got.shape == (90, 60, 3)
    assert got[5, 5, 0] > 200 and got[5, 5, 2] < 60  # red block top-left
    assert got[-5, -5, 2] > 200 and got[-5, -5, 0] < 60  # blue block bottom-right


# ---- files, folders and keys --------------------------------------------------------------------
def test_same_named_files_in_two_subfolders_both_kept(tmp_path):
    for sub, value in (("a", 10), ("b", 200)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "img.png").write_bytes(png_bytes(np.full((8, 8, 3), value, np.uint8)))
    imgs = load_images([str(tmp_path)])
    assert isinstance(imgs, dict)
    assert sorted(imgs) == ["a/img.png", "b/img.png"]
    assert imgs["a/img.png"][0, 0, 0] == 10 and imgs["b/img.png"][0, 0, 0] == 200
    # two folders given separately with the same file name: both kept, keys unique
    imgs2 = load_images([str(tmp_path / "a"), str(tmp_path / "b")])
    assert len(imgs2) == 2 and sorted(v[0, 0, 0] for v in imgs2.values()) == [10, 200]
    # the same file twice is loaded once; limit applies
    assert len(load_images([str(tmp_path / "a" / "img.png")] * 2)) == 1
    assert len(load_images([str(tmp_path)], limit=1)) == 1


def test_sample_sources_in_load_images():
    pytest.importorskip("skimage")
    imgs = load_images(["sample:coffee"])
    assert list(imgs) == ["sample:coffee"] and imgs["sample:coffee"].shape[2] == 3
    with pytest.raises(InputError, match="unknown sample"):
        load_images(["sample:nope"])


def test_directory_and_bad_files_are_typed_errors(tmp_path):
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(MissingFileError):
        load_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(empty)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError):
        load_image(junk)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_bytes(np.zeros((64, 64, 3), np.uint8))[:40])
    with pytest.raises(InputError):
        load_image(truncated)
    corrupt = tmp_path / "corrupt.jpg"
    buf = io.BytesIO()
    Image.fromarray(_marked()).save(buf, format="JPEG")
    corrupt.write_bytes(buf.getvalue()[:200])
    try:
        out = load_image(corrupt)  # some decoders return a partial image; that is acceptable
        assert out.ndim == 3
    except InputError:
        pass
