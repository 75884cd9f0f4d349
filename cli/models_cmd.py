"""``samdeploy models``: the checkpoint registry and model variants.

    samdeploy models list [--json]                  registry table: name, family, size, hash, licence, URL (torch-free)
    samdeploy models download NAME [--cache-dir D]  verified download into the cache; prints the path
    samdeploy models inspect CHECKPOINT [--model auto] [--trust-pickle]
                                                    what a checkpoint file is (family, variant, hash)
"""

from __future__ import annotations

import argparse
import json

HELP = "list the checkpoint registry / download a checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_action", metavar="ACTION")
    ls = sub.add_parser("list", help="table of known official checkpoints and model variants")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    dl = sub.add_parser("download", help="download a registry checkpoint (size + hash verified)")
    dl.add_argument("name", help="registry name, see `samdeploy models list`")
    dl.add_argument("--cache-dir", default=None, help="default: $SAMDEPLOY_CACHE or ~/.cache/samdeploy")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    ins = sub.add_parser("inspect", help="detect the family/variant of a checkpoint file and check it loads")
    ins.add_argument("checkpoint")
    ins.add_argument("--model", default="auto", help="variant to check against (default: auto-detect)")
    ins.add_argument("--trust-pickle", action="store_true", help="allow unpickling whole-module checkpoints")
    ins.add_argument("--json", action="store_true")


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return "?"  # pragma: no cover


def _list(args: argparse.Namespace) -> int:
    from ..models.registry import REGISTRY
    from ..models.variants import VARIANTS

    if args.json:
        import dataclasses

        print(json.dumps({k: dataclasses.asdict(v) for k, v in REGISTRY.items()}, indent=2))
        return 0
    rows = [("NAME", "MODEL", "FAMILY", "SIZE", "HASH", "LICENSE", "URL")]
    for c in REGISTRY.values():
        rows.append((c.name, c.variant, c.family, _human_size(c.size), c.hash_summary, c.license,
                     c.url if c.url else f"(manual download: {c.page})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print()
    print("model variants (--model): " + ", ".join(f"{v.name} ({v.params})" for v in VARIANTS.values()))
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..errors import DownloadError
    from ..models.registry import cache_dir, download, get_checkpoint

    folder = cache_dir(args.cache_dir)
    try:
        path = download(args.name, cache_dir=args.cache_dir, progress=not args.quiet)
    except DownloadError as exc:
        # Say WHERE the cache folder is (the registry's hint only says "the cache folder").
        message = str(exc).split("\n  hint: ", 1)[0]
        hint = exc.hint or ""
        target = folder / get_checkpoint(args.name).filename
        if "cache folder" in hint:
            hint = hint.replace("the cache folder", f"the cache folder as {target}")
        else:
            hint = (hint + "; " if hint else "") + f"or copy it to {target} (the cache folder)"
        raise DownloadError(message, hint=hint) from None
    print(path)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from ..models.checkpoint import load_checkpoint

    _, info = load_checkpoint(args.checkpoint, variant=args.model, trust_pickle=args.trust_pickle)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"file:      {info.path}")
    print(f"sha256:    {info.sha256}")
    print(f"looks like {info.detected}")
    print(f"loads as:  --model {info.variant} (family {info.family}), strict key+shape match")
    print(f"contents:  {info.num_tensors} tensors, {info.num_params / 1e6:.2f}M values, {info.container}")
    for note in info.notes:
        print(f"note:      {note}")
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "models_action", None)
    if action == "list":
        return _list(args)
    if action == "download":
        return _download(args)
    if action == "inspect":
        return _inspect(args)
    from ..errors import InputError

    raise InputError("missing action", hint="samdeploy models list | download NAME | inspect CHECKPOINT")
