"""Registry of official checkpoints and a verified downloader (no torch import).

    samdeploy models list
    samdeploy models download sam_vit_b        -> ~/.cache/samdeploy/sam_vit_b_01ec64.pth

Every entry records where the file comes from (URL, source repository, licence) and what is known
about it (size, SHA-256 / MD5). Nothing is invented: fields that are not known from a reliable public
source are ``None``, and the downloader then prints the SHA-256 it computed instead of checking it.

Facts (see /work/shared/reference/models.md §3, §4 and the notes per entry):
- SAM file names end in the first 6 hex digits of the file's **MD5** (not SHA-256): e.g.
  ``sam_vit_h_4b8939.pth`` has MD5 4b8939a88964f0f4ff5f5b2642c598a6. The full MD5 and SHA-256 values
  below are the ones published consistently by several independent public download scripts
  (e.g. micro-sam's checksum table, IOPaint's SAM plugin); the ViT-B/H and MobileSAM sizes match
  models.md's LFS-pointer sizes.
- SlimSAM uniform checkpoints are only on Google Drive (no direct URL): download them by hand.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_path
from ..errors import DownloadError, InputError

__all__ = ["Checkpoint", "REGISTRY", "get_checkpoint", "cache_dir", "download", "download_checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    name: str  # registry name (samdeploy models download NAME)
    family: str
    variant: str  # samdeploy.models.variants name to load it with
    filename: str
    url: str | None  # direct download URL; None = manual download only (see `page`)
    size: int | None  # bytes, when known exactly
    sha256: str | None  # full SHA-256, when known
    md5: str | None  # full MD5, when known
    license: str
    source: str  # official repository
    page: str  # where a human finds the file
    notes: str = ""

    @property
    def hash_summary(self) -> str:
        if self.sha256:
            return f"sha256:{self.sha256[:12]}"
        if self.md5:
            return f"md5:{self.md5[:12]}"
        return "unknown"


_SAM_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
_EVIT_BASE = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"
_EDGE_SAM_BASE = "https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/main/weights/"

REGISTRY: dict[str, Checkpoint] = {
    c.name: c
    for c in [
        Checkpoint(
            "sam_vit_b", "sam", "vit_b", "sam_vit_b_01ec64.pth", _SAM_BASE + "sam_vit_b_01ec64.pth",
            size=375_042_383,
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            md5="01ec64d29a2fca3f0661936605ae66f8",
            license="Apache-2.0", source="facebookresearch/segment-anything", page=_SAM_PAGE,
        ),
        Checkpoint(
            "sam_vit_l", "sam", "vit_l", "sam_vit_l_0b3195.pth", _SAM_BASE + "sam_vit_l_0b3195.pth",
            size=None,  # ~1.25 GB; the exact byte count is not confirmed by a reliable source
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            md5="0b3195507c641ddb6910d2bb5adee89c",
            license="Apache-2.0", source="facebookresearch/segment-anything", page=_SAM_PAGE,
        ),
        Checkpoint(
            "sam_vit_h", "sam", "vit_h", "sam_vit_h_4b8939.pth", _SAM_BASE + "sam_vit_h_4b8939.pth",
            size=2_564_550_879,
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            md5="4b8939a88964f0f4ff5f5b2642c598a6",
            license="Apache-2.0", source="facebookresearch/segment-anything", page=_SAM_PAGE,
        ),
        Checkpoint(
            "mobile_sam", "mobile_sam", "mobile_sam", "mobile_sam.pt",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            size=40_728_226,
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            md5=None,
            license="Apache-2.0", source="ChaoningZhang/MobileSAM",
            page="https://github.com/ChaoningZhang/MobileSAM/tree/master/weights",
            notes="committed in the MobileSAM git repository",
        ),
        Checkpoint(
            "tinysam", "tinysam", "tinysam", "tinysam_42.3.pth",
            "https://github.com/xinghaochen/TinySAM/releases/download/3.0/tinysam_42.3.pth",
            size=None, sha256=None, md5=None,
            license="Apache-2.0", source="xinghaochen/TinySAM",
            page="https://github.com/xinghaochen/TinySAM#evaluation",
            notes="COCO AP 42.3 release linked from the README; no published hash. Load with --model tinysam",
        ),
        Checkpoint(
            "tinysam_hf", "tinysam", "tinysam", "tinysam.pth",
            "https://huggingface.co/xinghaochen/tinysam/resolve/main/tinysam.pth",
            size=None, sha256=None, md5=None,
            license="Apache-2.0", source="xinghaochen/TinySAM",
            page="https://huggingface.co/xinghaochen/tinysam/tree/main",
            notes="the Hugging Face copy (40.7 MB); whether it equals tinysam_42.3 is not known",
        ),
        Checkpoint(
            "slimsam_50", "slimsam", "slimsam_50", "SlimSAM-50-uniform.pth", None,
            size=None, sha256=None, md5=None,
            license="Apache-2.0", source="czg1225/SlimSAM", page="https://github.com/czg1225/SlimSAM#model-zoo",
            notes="Google Drive only: download by hand (the uniform-pruned file, not the pickled global one)",
        ),
        Checkpoint(
            "slimsam_77", "slimsam", "slimsam_77", "SlimSAM-77-uniform.pth", None,
            size=None, sha256=None, md5=None,
            license="Apache-2.0", source="czg1225/SlimSAM", page="https://github.com/czg1225/SlimSAM#model-zoo",
            notes="Google Drive only: download by hand (the uniform-pruned file, not the pickled global one)",
        ),
        *[
            Checkpoint(
                f"efficientvit_sam_{k}", "efficientvit_sam", f"efficientvit_sam_{k}", f"efficientvit_sam_{k}.pt",
                f"{_EVIT_BASE}efficientvit_sam_{k}.pt",
                size=None, sha256=None, md5=None,  # sizes are only known to the MB (models.md [S]); no published hash
                license="Apache-2.0", source="mit-han-lab/efficientvit",
                page="https://huggingface.co/mit-han-lab/efficientvit-sam/tree/main",
                notes=f"plain state_dict, about {mb} MB; norms need eps 1e-6 (applied by samdeploy)",
            )
            for k, mb in (("l0", 139), ("l1", 191), ("l2", 246), ("xl0", 468), ("xl1", 814))
        ],
        *[
            Checkpoint(
                name, "edge_sam", name, f"{name}.pth", f"{_EDGE_SAM_BASE}{name}.pth",
                size=None, sha256=None, md5=None,  # 38.8 MB (models.md [S]); no published hash
                license="S-Lab License 1.0 (NON-COMMERCIAL use only)", source="chongzhou96/EdgeSAM",
                page="https://huggingface.co/spaces/chongzhou/EdgeSAM/tree/main/weights",
                notes="non-commercial licence: check it before you ship this model",
            )
            for name in ("edge_sam", "edge_sam_3x")
        ],
        *[
            Checkpoint(
                f"sam_hq_vit_{k}", "hq_sam", f"hq_vit_{k}", f"sam_hq_vit_{k}.pth",
                f"https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_{k}.pth",
                size=size, sha256=None, md5=None,
                license="Apache-2.0", source="SysCV/sam-hq", page="https://huggingface.co/lkeab/hq-sam/tree/main",
                notes=note,
            )
            for k, size, note in (
                ("b", 379_335_069, "size from the Hugging Face LFS pointer (models.md [S]); no published hash"),
                ("tiny", None, "about 43 MB (models.md [S]); no published hash"),
            )
        ],
        *[
            Checkpoint(
                f"{gen}_hiera_{size}", "sam2", f"{gen}_hiera_{size}", f"{gen}_hiera_{long}.pt",
                f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{gen}_hiera_{long}.pt",
                size=None, sha256=None, md5=None,  # not published with the files
                license="Apache-2.0", source="facebookresearch/sam2",
                page="https://github.com/facebookresearch/sam2#model-description",
                notes='{"model": state_dict} with the video modules; samdeploy exports the image path',
            )
            for gen, date in (("sam2.1", "092824"), ("sam2", "072824"))
            for size, long in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"))
        ],
        Checkpoint(
            "repvit_sam", "repvit_sam", "repvit_sam", "repvit_sam.pt",
            "https://huggingface.co/spaces/jameslahm/repvit-sam/resolve/main/repvit_sam.pt",
            size=None, sha256=None, md5=None,  # about 110 MB (models.md [S]); no published hash
            license="Apache-2.0", source="THU-MIG/RepViT",
            page="https://huggingface.co/spaces/jameslahm/repvit-sam/tree/main",
            notes="also attached to the THU-MIG/RepViT GitHub release v1.0",
        ),
        Checkpoint(
            "efficient_sam_vitt", "efficient_sam", "efficient_sam_vitt", "efficient_sam_vitt.pt",
            "https://github.com/yformer/EfficientSAM/raw/main/weights/efficient_sam_vitt.pt",
            size=41_000_290,  # a third-party copy's LFS pointer (models.md 3.8 [S], as for mobile_sam); no published hash
            sha256=None, md5=None,
            license="Apache-2.0", source="yformer/EfficientSAM",
            page="https://github.com/yformer/EfficientSAM/tree/main/weights",
            notes='committed in the EfficientSAM git repository; {"model": state_dict}',
        ),
        Checkpoint(
            "efficient_sam_vits", "efficient_sam", "efficient_sam_vits", "efficient_sam_vits.pt", None,
            size=None, sha256=None, md5=None,  # unzipped 105,759,624 B (models.md 3.8 [S])
            license="Apache-2.0", source="yformer/EfficientSAM",
            page="https://github.com/yformer/EfficientSAM/tree/main/weights",
            notes="stored zipped in git (weights/efficient_sam_vits.pt.zip, the file is > 100 MB): download and "
            "unzip it by hand, then pass --checkpoint efficient_sam_vits.pt",
        ),
        Checkpoint(
            "nanosam", "nanosam", "nanosam", "resnet18_image_encoder.onnx", None,
            size=None, sha256=None, md5=None,  # Google Drive links in the README; sizes unknown (models.md [U])
            license="Apache-2.0", source="NVIDIA-AI-IOT/nanosam", page="https://github.com/NVIDIA-AI-IOT/nanosam#readme",
            notes="only ONNX files are published (no PyTorch checkpoint): download resnet18_image_encoder.onnx by "
            "hand and run `samdeploy import resnet18_image_encoder.onnx --decoder-from <a mobile_sam export> --out DIR`",
        ),
    ]
}


def get_checkpoint(name: str) -> Checkpoint:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown checkpoint {name!r}", hint=f"choose one of: {', '.join(REGISTRY)} (see `samdeploy models list`)"
        ) from None


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$SAMDEPLOY_CACHE``, else ``~/.cache/samdeploy``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SAMDEPLOY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "samdeploy"


def _offline_error(entry: Checkpoint, reason: str) -> DownloadError:
    return DownloadError(
        f"cannot download {entry.name} from {entry.url} ({reason})",
        hint=f"if this machine is offline, fetch {entry.filename} elsewhere ({entry.page}) and pass "
        "--checkpoint PATH (or copy it into the cache folder)",
    )


def _verify(entry: Checkpoint, size: int, sha256: str, md5: str) -> None:
    if entry.size is not None and size != entry.size:
        raise DownloadError(
            f"{entry.filename}: got {size:,} bytes, expected {entry.size:,} (truncated or a different file)",
            hint="run the download again; if it persists the upstream file changed: report it",
        )
    if entry.sha256 is not None and sha256 != entry.sha256:
        raise DownloadError(
            f"{entry.filename}: SHA-256 {sha256} does not match the registry ({entry.sha256})",
            hint="the download is damaged or the file was replaced upstream; it was not kept",
        )
    if entry.sha256 is None and entry.md5 is not None and md5 != entry.md5:
        raise DownloadError(
            f"{entry.filename}: MD5 {md5} does not match the registry ({entry.md5})",
            hint="the download is damaged or the file was replaced upstream; it was not kept",
        )


def _hash_file(path: Path) -> tuple[int, str, str]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return size, sha.hexdigest(), md5.hexdigest()


class _Progress:
    """Byte progress on stderr (tqdm, only when stderr is a terminal)."""

    def __init__(self, total: int | None, name: str, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)
            except ImportError:  # pragma: no cover - tqdm is a base dependency
                self.bar = None

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stamp_path(final: Path) -> Path:
    return final.with_name(final.name + ".verified")


def _stamp(entry: Checkpoint, final: Path) -> str:
    st = final.stat()
    return f"{st.st_size} {st.st_mtime_ns} {entry.sha256 or entry.md5 or '-'}"


def _cached_ok(entry: Checkpoint, final: Path) -> bool:
    """A cached file is reused when its verification stamp (size, mtime and expected hash,
    written after the hash check) still matches; otherwise it is hashed again."""
    stamp = _stamp_path(final)
    if stamp.exists() and stamp.read_text().strip() == _stamp(entry, final):
        return True
    size, sha, md5 = _hash_file(final)
    try:
        _verify(entry, size, sha, md5)
    except DownloadError:
        return False
    stamp.write_text(_stamp(entry, final))
    return True


def download_checkpoint(
    entry: Checkpoint, cache: str | os.PathLike | None = None, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Download ``entry`` into the cache (atomically), verify size and hash, return its path.

    A file already in the cache is reused once verified (hashed once, then remembered in a
    ``.verified`` stamp of its size and mtime). Offline, or with
    ``SAMDEPLOY_OFFLINE=1``, raises DownloadError telling the user to pass ``--checkpoint PATH``."""
    final = cache_dir(cache) / entry.filename
    if final.exists():
        if _cached_ok(entry, final):
            return final
        final.unlink()  # a stale or damaged copy: fetch it again
        _stamp_path(final).unlink(missing_ok=True)
    if entry.url is None:
        raise DownloadError(
            f"{entry.name} has no direct download URL ({entry.notes})",
            hint=f"download {entry.filename} from {entry.page}, then pass --checkpoint PATH",
        )
    if os.environ.get("SAMDEPLOY_OFFLINE"):
        raise _offline_error(entry, "SAMDEPLOY_OFFLINE is set")

    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        request = urllib.request.Request(entry.url, headers={"User-Agent": "samdeploy"})
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_path(final) as tmp:
            bar = _Progress(entry.size or _content_length(response), entry.filename, progress)
            try:
                with open(tmp, "wb") as out:
                    while block := response.read(1 << 20):
                        out.write(block)
                        sha.update(block)
                        md5.update(block)
                        size += len(block)
                        bar.update(len(block))
            finally:
                bar.close()
            _verify(entry, size, sha.hexdigest(), md5.hexdigest())  # raising here discards tmp
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise _offline_error(entry, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _offline_error(entry, f"network error: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise _offline_error(entry, f"{type(exc).__name__}: {exc}") from None
    _stamp_path(final).write_text(_stamp(entry, final))
    if entry.sha256 is None:
        print(
            f"samdeploy: {entry.filename} has no published SHA-256; downloaded file has sha256 {sha.hexdigest()}",
            file=sys.stderr,
        )
    return final


def _content_length(response) -> int | None:
    try:
        value = response.headers.get("Content-Length")
        return int(value) if value else None
    except (AttributeError, ValueError):
        return None


def download(name: str, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download registry checkpoint ``name`` (see :data:`REGISTRY`) and return its cached path."""
    return download_checkpoint(get_checkpoint(name), cache_dir, progress=progress)
