#!/usr/bin/env python
"""Baseline for the decoder target "<= 0.7x the official per-prompt cost" (NOT product code).

Exports the OFFICIAL ``segment_anything`` prompt encoder + ``MaskDecoder`` as they are, with a
prompt-batch axis: the image embedding ``[1,256,64,64]`` is repeated per prompt inside
``MaskDecoder.predict_masks`` (``torch.repeat_interleave``), exactly what the official
``SamPredictor.predict_torch`` does for K prompts. Prompt embedding follows the official ONNX
export (``segment_anything.utils.onnx.SamOnnxModel._embed_points/_embed_masks``), so the graph has
our decoder contract's I/O and both graphs can be fed the same inputs.

Then times, on ONNX Runtime CPU with the same thread count, the official graph and ours
(``--model-dir``/``--decoder``) at prompt batch 1..64 and prints ms per prompt and ours/official.

    python scripts/bench_official_decoder.py --model-dir out/mobile_sam --threads 1 --json res.json

Needs torch and segment-anything==1.0 (test extras). Weights are seeded random (timing only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from samdeploy import contract as C


def export_official_decoder(path: str, seed: int = 0, opset: int = 17) -> str:
    import torch
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(seed)
    # The SAM-1 prompt encoder + mask decoder, built with build_sam.py's hyperparameters (every
    # SAM-1 family model -- ViT-B/L/H, MobileSAM, TinySAM, SlimSAM -- shares this decoder).
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                      transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)

    class OfficialDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pe = pe
            self.dec = dec

        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
            # == SamOnnxModel._embed_points / _embed_masks (official export), batch over prompts
            coords = (point_coords + 0.5) / 1024.0
            emb = self.pe.pe_layer._pe_encoding(coords)
            lab = point_labels.unsqueeze(-1)
            emb = emb * (lab != -1) + self.pe.not_a_point_embed.weight * (lab == -1)
            for i in range(self.pe.num_point_embeddings):
                emb = emb + self.pe.point_embeddings[i].weight * (lab == i)
            h = has_mask_input.view(-1, 1, 1, 1)
            dense = h * self.pe.mask_downscaling(mask_input) + (1 - h) * self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            # official MaskDecoder as-is: repeat_interleave(image_embeddings, B) inside
            masks, iou = self.dec.predict_masks(image_embeddings, self.pe.get_dense_pe(), emb, dense)
            return iou, masks

    b, n = 2, 3
    args = (torch.randn(1, 256, 64, 64), torch.rand(b, n, 2) * 1024, torch.ones(b, n), torch.zeros(b, 1, 256, 256), torch.zeros(b))
    dyn = {C.DECODER_POINT_COORDS: {0: "B", 1: "N"}, C.DECODER_POINT_LABELS: {0: "B", 1: "N"},
           C.DECODER_MASK_INPUT: {0: "B"}, C.DECODER_HAS_MASK_INPUT: {0: "B"}, C.DECODER_IOU: {0: "B"},
           C.DECODER_LOW_RES_MASKS: {0: "B"}}
    with torch.no_grad():
        torch.onnx.export(OfficialDecoder().eval(), args, path, opset_version=opset, dynamo=False,
                          input_names=list(C.DECODER_INPUTS), output_names=list(C.DECODER_OUTPUTS), dynamic_axes=dyn)
    return path


def time_decoder(path: str, batch_sizes, runs: int, warmup: int, threads: int | None) -> dict[str, dict[str, float]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    out = {}
    for b in batch_sizes:
        feeds = C.decoder_feeds(
            emb,
            (rng.random((b, 2, 2)) * 1024).astype(np.float32),
            np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1)),  # 1 click + SAM's pad point
            np.zeros((b, 1, 256, 256), np.float32),
            np.zeros((b,), np.float32),
        )
        for _ in range(warmup):
            sess.run(None, feeds)
        ts, cpu = [], []
        for _ in range(runs):
            c0 = time.process_time()
            t0 = time.perf_counter()
            sess.run(None, feeds)
            ts.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        ms = np.array(ts) * 1e3
        # CPU time (all threads) is the steadier number on a shared machine.
        out[str(b)] = {"call_p50": float(np.median(ms)), "call_p90": float(np.percentile(ms, 90)),
                       "per_prompt_p50": float(np.median(ms)) / b,
                       "cpu_per_prompt_p50": float(np.median(cpu)) * 1e3 / b}
        print(f"  {os.path.basename(path)} B={b}: {out[str(b)]['per_prompt_p50']:.2f} ms/prompt "
              f"(cpu {out[str(b)]['cpu_per_prompt_p50']:.2f})", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="our export directory (decoder.onnx)")
    ap.add_argument("--decoder", help="our decoder.onnx (overrides --model-dir)")
    ap.add_argument("--official", help="reuse an already exported official decoder .onnx")
    ap.add_argument("--batch-sizes", default="1,4,16,64")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    bs = [int(v) for v in args.batch_sizes.split(",")]
    ours_path = args.decoder or (os.path.join(args.model_dir, "decoder.onnx") if args.model_dir else None)
    tmp = tempfile.mkdtemp(prefix="official_decoder_")
    official_path = args.official or export_official_decoder(os.path.join(tmp, "official_decoder.onnx"))
    import onnxruntime as ort

    res = {"threads": args.threads, "onnxruntime": ort.__version__, "official_path": official_path,
           "official": time_decoder(official_path, bs, args.runs, args.warmup, args.threads)}
    if ours_path:
        res["ours_path"] = ours_path
        res["ours"] = time_decoder(ours_path, bs, args.runs, args.warmup, args.threads)
    print(f"\n{'batch':>6}{'official ms/prompt':>20}{'ours ms/prompt':>16}{'ours/official':>15}{'(cpu ratio)':>13}")
    for b in map(str, bs):
        o = res["official"][b]["per_prompt_p50"]
        line = f"{b:>6}{o:>20.2f}"
        if "ours" in res:
            u = res["ours"][b]["per_prompt_p50"]
            rc = res["ours"][b]["cpu_per_prompt_p50"] / res["official"][b]["cpu_per_prompt_p50"]
            res.setdefault("ratio", {})[b] = u / o
            res.setdefault("cpu_ratio", {})[b] = rc
            line += f"{u:>16.2f}{u / o:>15.2f}{rc:>13.2f}"
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
