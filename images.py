"""Image loading shared by check, calibrate, bench and the CLI (no torch).

``default_photographs()`` returns real photographs bundled with scikit-image, so that parity checks,
calibration and benchmarks run on natural images out of the box. ``load_image`` reads any file
OpenCV can decode and returns HxWx3 uint8 RGB.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError

# ---- pixel budget ---------------------------------------------------------------------------------
# Peak memory through load -> set_image -> predict is roughly 20-25 bytes per image pixel, on top of
# the model: the file bytes, the decoded array (3-8 B/px: RGB(A), 8- or 16-bit), the BGR->RGB copy
# (3-8 B/px), the uint32 temporary of the 16-bit conversion (up to 16 B/px, short-lived), and per
# predict the float32 full-resolution logits of the mask being upsampled (4 B/px) plus the 3 bool
# output masks (3 B/px). The bug report measured ~22 B/px (20000x20000 -> 9 GB RSS). An 8 GB
# Jetson shares that memory between the CPU, the GPU (CUDA context + TensorRT engine + activations,
# ~2-3 GB) and the OS (~1.5 GB), so an image should stay well under ~2 GB: 50 megapixels
# (~1.1 GB at 22 B/px; larger than any phone/DSLR photo, e.g. 8688x5792 = 50.3 MP is just over,
# 8192x6144 = 50.3 MP too; 7680x4320 8K video frames = 33 MP pass) keeps that margin.
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "SAMDEPLOY_MAX_PIXELS"


def resolve_max_pixels(max_pixels: int | None = None) -> int | None:
    """The pixel budget to apply: ``max_pixels`` if given, else ``$SAMDEPLOY_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. ``0`` (argument or env var) disables the limit; returns ``None`` then."""
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            value = float(env.replace("_", ""))
            if not np.isfinite(value) or value != int(value):
                raise ValueError
            max_pixels = int(value)
        except ValueError:
            raise InputError(
                f"{MAX_PIXELS_ENV}={env!r} is not a whole number of pixels",
                hint=f"set e.g. {MAX_PIXELS_ENV}=100000000 (100 megapixels), or 0 for no limit",
            ) from None
    else:
        try:
            if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels:
                raise ValueError
            max_pixels = int(max_pixels)
        except (TypeError, ValueError):
            raise InputError(
                f"max_pixels must be a whole number of pixels, got {max_pixels!r}",
                hint="pass e.g. max_pixels=100_000_000, or 0 for no limit",
            ) from None
    if max_pixels < 0:
        raise InputError(f"the pixel budget must be >= 0 (0 = no limit), got {max_pixels}")
    return max_pixels or None


def check_pixel_budget(h: int, w: int, what: str = "image", max_pixels: int | None = None) -> None:
    """Raise :class:`InputError` if an ``h x w`` image exceeds the pixel budget (see
    :func:`resolve_max_pixels`). Call it from the header, before decoding."""
    budget = resolve_max_pixels(max_pixels)
    if budget is not None and int(h) * int(w) > budget:
        raise InputError(
            f"{what} is {w}x{h} = {int(h) * int(w) / 1e6:.1f} megapixels, over the budget of "
            f"{budget / 1e6:.1f} megapixels (decoding and segmenting it would need about "
            f"{int(h) * int(w) * 22 / 2**30:.1f} GB of memory)",
            hint=f"downscale the image, or raise the budget with max_pixels=... or "
            f"{MAX_PIXELS_ENV}=... (0 disables the limit) if the device has the memory",
        )

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


def to_rgb_uint8(img: np.ndarray, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Convert grayscale / RGBA / 16-bit / float-in-[0,1] images to HxWx3 uint8 RGB, or raise.

    Images over the pixel budget (``max_pixels``, else ``$SAMDEPLOY_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`; 0 = no limit) are refused before any conversion copy is made."""
    img = np.asarray(img)
    if img.size == 0 or img.ndim < 2 or 0 in img.shape[:2]:
        raise InputError(f"{what} is empty (shape {img.shape})", hint="pass a non-empty HxWx3 image")
    check_pixel_budget(img.shape[0], img.shape[1], what, max_pixels)
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

_PIL_LIMIT_LOCK = threading.Lock()

# EXIF orientation tag (0x0112) -> the numpy equivalent of PIL.ImageOps.exif_transpose.
_EXIF_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


def _read_header(data: bytes, path: Path, budget: int | None) -> tuple[tuple[int, int] | None, int]:
    """((h, w) from the header or None if Pillow cannot parse it, EXIF orientation 1..8)."""
    from PIL import Image, UnidentifiedImageError

    def _open():
        with warnings.catch_warnings():
            # our own budget replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))

    try:
        try:
            im = _open()
        except Image.DecompressionBombError:
            # Only the header has been read. Re-read it without Pillow's limit (our own budget,
            # checked next, replaces it and may be higher or lower) to get the size.
            with _PIL_LIMIT_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    im = _open()
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{path} is too large to decode safely ({e})",
            hint=f"downscale the image, or raise the budget with max_pixels=... or {MAX_PIXELS_ENV}=...",
        ) from None
    except UnidentifiedImageError:
        return None, 1  # OpenCV may still read it; it enforces its own pixel limit
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt header
        raise InputError(f"cannot read image {path}: {e}", hint="the file is damaged; re-export or re-download it") from None
    with im:
        w, h = im.size
        orientation = 1
        # A PNG's eXIf chunk after the pixel data would make getexif() decode the whole image.
        if not (im.format == "PNG" and "exif" not in im.info):
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # a damaged EXIF block must not make a readable image unreadable
                orientation = 1
    return (h, w), orientation


def _load_sample(name: str, max_pixels: int | None) -> np.ndarray:
    if name not in _DEFAULT_PHOTOS + _HELD_OUT_PHOTOS:
        raise InputError(
            f"unknown sample photograph {name!r}",
            hint=f"choose one of: {', '.join(_DEFAULT_PHOTOS + _HELD_OUT_PHOTOS)}",
        )
    img = _skimage_photo(name)
    check_pixel_budget(img.shape[0], img.shape[1], SAMPLE_PREFIX + name, max_pixels)
    return img


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (8- or 16-bit, gray, RGB or RGBA files).

    The EXIF orientation is applied (the image comes out upright, as viewers show it). The size is
    read from the header and checked against the pixel budget BEFORE decoding: ``max_pixels``,
    else ``$SAMDEPLOY_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS` (0 = no limit).

    ``sample:NAME`` loads one of scikit-image's bundled photographs (e.g. ``sample:astronaut``),
    so examples and smoke tests need no image file."""
    import cv2

    budget = resolve_max_pixels(max_pixels)
    if str(path).startswith(SAMPLE_PREFIX):
        return _load_sample(str(path)[len(SAMPLE_PREFIX):], budget or 0)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(
            f"{path} is a folder, not an image file",
            hint="pass an image file here; folders are accepted where several images are (e.g. --images)",
        )
    try:
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"cannot read image {path}: permission denied", hint="check the file's permissions") from None
    except OSError as e:
        raise InputError(f"cannot read image {path}: {e.strerror or e}", hint="check that the file is a readable image file") from None
    if not data:
        raise InputError(f"image file {path} is empty (0 bytes)", hint="re-export or re-download the image")
    hw, orientation = _read_header(data, path, budget)
    if hw is not None:
        check_pixel_budget(hw[0], hw[1], str(path), budget or 0)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. over OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS)
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot decode image {path}: {msg}",
            hint="use a JPEG/PNG/BMP/TIFF/WebP file of a reasonable size (see max_pixels / " + MAX_PIXELS_ENV + ")",
        ) from None
    del data
    if img is None:
        raise InputError(f"cannot decode image {path}", hint="the file is damaged or not an image; use a JPEG/PNG/BMP/TIFF/WebP file")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if orientation in _EXIF_ORIENT:
        img = _EXIF_ORIENT[orientation](img)
    return to_rgb_uint8(img, str(path), budget or 0)


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files/folders skipped), sorted."""
    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
            out.append(f)
    return out


def load_images(
    sources: list[str] | None, limit: int | None = None, max_pixels: int | None = None
) -> dict[str, np.ndarray]:
    """Files, folders and/or ``sample:NAME`` -> {key: image}; ``None`` or empty -> the default photographs.

    Keys are unique: a file inside a folder is keyed by its path relative to that folder
    (``sub/a.png``; folders are searched recursively), a file given directly by its file name, a
    sample by ``sample:NAME``. When two sources produce the same key, the later one is keyed by its
    full path as given. The same file given twice is loaded once. ``max_pixels`` as in
    :func:`load_image`; ``limit`` caps the number of images (before any is decoded)."""
    budget = resolve_max_pixels(max_pixels)
    if not sources:
        names = _DEFAULT_PHOTOS if limit is None else _DEFAULT_PHOTOS[: max(0, limit)]
        return {n: _load_sample(n, budget or 0) for n in names}
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    entries: list[tuple[str, str, str | Path]] = []  # (key, fallback key, source)
    seen: set[str] = set()
    for s in sources:
        if str(s).startswith(SAMPLE_PREFIX):
            entries.append((str(s), str(s), str(s)))
            continue
        p = Path(s)
        if p.is_dir():
            for f in _image_files(p):
                entries.append((f.relative_to(p).as_posix(), f.as_posix(), f))
        elif p.exists():
            entries.append((p.name, p.as_posix(), p))
        else:
            raise MissingFileError(f"image or folder not found: {p}")
    if not entries:
        raise InputError(
            f"no images found in {', '.join(map(str, sources))}",
            hint=f"supported: {', '.join(IMAGE_EXTENSIONS)} (folders are searched recursively)",
        )
    keyed: dict[str, str | Path] = {}
    for key, fallback, src in entries:
        ident = str(src) if isinstance(src, str) else str(src.resolve())
        if ident in seen:
            continue
        seen.add(ident)
        if key in keyed:
            key = fallback
        base, n = key, 2
        while key in keyed:
            key, n = f"{base}#{n}", n + 1
        keyed[key] = src
    items = list(keyed.items())
    if limit is not None:
        items = items[: max(0, limit)]
    return {k: load_image(src, budget or 0) for k, src in items}
