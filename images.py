"""Image loading shared by check, calibrate, bench and the CLI (no torch).

``default_photographs()`` returns real photographs bundled with scikit-image, so that parity checks,
calibration and benchmarks run on natural images out of the box. ``load_image`` reads any file
OpenCV can decode and returns HxWx3 uint8 RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Bundled with the scikit-image wheel (no download). Sizes vary on purpose: landscape, portrait-free
# square, small, and one larger than the 1024 encoder input (retina, 1411x1411).
_DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina")
# Held out from calibration (used by the calibration accuracy gate); all distinct from the defaults
# (skimage's "cat" is the same photograph as "chelsea").
_HELD_OUT_PHOTOS = ("immunohistochemistry", "camera", "coins")


def _skimage_photo(name: str) -> np.ndarray:
    try:
        import skimage.data as data
    except ImportError:
        raise InputError(
            "scikit-image is not installed, so the default sample photographs are unavailable",
            hint="pip install scikit-image, or pass your own images (a folder or files)",
        ) from None
    img = getattr(data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    return to_rgb_uint8(np.asarray(img), name)


def default_photographs(names: tuple[str, ...] = _DEFAULT_PHOTOS) -> dict[str, np.ndarray]:
    """Name -> HxWx3 uint8 RGB real photograph."""
    return {n: _skimage_photo(n) for n in names}


def held_out_photographs() -> dict[str, np.ndarray]:
    return default_photographs(_HELD_OUT_PHOTOS)


def to_rgb_uint8(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Convert grayscale / RGBA / 16-bit / float-in-[0,1] images to HxWx3 uint8 RGB, or raise."""
    img = np.asarray(img)
    if img.size == 0 or img.ndim < 2 or 0 in img.shape[:2]:
        raise InputError(f"{what} is empty (shape {img.shape})", hint="pass a non-empty HxWx3 image")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{what} has shape {img.shape}; expected HxW, HxWx1, HxWx3 or HxWx4",
            hint="pass an image as an HxWx3 uint8 RGB array",
        )
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
    elif img.dtype in (np.float32, np.float64):
        if not np.isfinite(img).all():
            raise InputError(f"{what} contains NaN or inf values")
        if img.min() < 0 or img.max() > 1.0:
            raise InputError(
                f"float {what} must be in [0, 1] (got range [{img.min():.3g}, {img.max():.3g}])",
                hint="pass uint8 RGB, or a float image scaled to [0, 1]",
            )
        img = np.rint(img * 255.0)
    elif img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        raise InputError(f"{what} has unsupported dtype {img.dtype}", hint="pass uint8, uint16 or float32 in [0, 1]")
    img = img.astype(np.uint8, copy=False)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]  # drop alpha
    return np.ascontiguousarray(img)


SAMPLE_PREFIX = "sample:"


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (8- or 16-bit, gray, RGB or RGBA files).

    ``sample:NAME`` loads one of scikit-image's bundled photographs (e.g. ``sample:astronaut``),
    so examples and smoke tests need no image file."""
    import cv2

    if str(path).startswith(SAMPLE_PREFIX):
        name = str(path)[len(SAMPLE_PREFIX):]
        if name not in _DEFAULT_PHOTOS + _HELD_OUT_PHOTOS:
            raise InputError(
                f"unknown sample photograph {name!r}",
                hint=f"choose one of: {', '.join(_DEFAULT_PHOTOS + _HELD_OUT_PHOTOS)}",
            )
        return _skimage_photo(name)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(f"cannot decode image {path}", hint="use a JPEG/PNG/BMP/TIFF/WebP file")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(img, str(path))


def load_images(sources: list[str] | None, limit: int | None = None) -> dict[str, np.ndarray]:
    """Files and/or folders -> {name: image}; ``None`` or empty -> the default photographs."""
    if not sources:
        imgs = default_photographs()
    else:
        files: list[Path] = []
        for s in sources:
            p = Path(s)
            if p.is_dir():
                files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS))
            elif p.exists():
                files.append(p)
            else:
                raise MissingFileError(f"image or folder not found: {p}")
        if not files:
            raise InputError(f"no images found in {', '.join(sources)}", hint=f"supported: {', '.join(IMAGE_EXTENSIONS)}")
        imgs = {f.name: load_image(f) for f in files}
    if limit is not None:
        imgs = dict(list(imgs.items())[:limit])
    return imgs
