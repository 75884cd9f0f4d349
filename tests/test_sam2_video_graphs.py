"""SAM 2.1 video graphs (models/sam2_video.py, `samdeploy export --video`) against the official sam2==1.1.0 code.

Seeded random SAM2.1-tiny weights are saved as ``{"model": state_dict}`` (the official file layout) and
loaded by the official ``build_sam2(config, file)`` at S = 512 (``++model.image_size=512``) and 1024.
The object-score head is shifted so that random objects are present or absent (score <= 0) and the
no-object branches run.

(a) memory attention: ours vs the oracle's ``memory_attention`` for R in {1,3,7}, P in {1,5,16} (4-token
    pointer split, RoPE exclusion), the query chunking forced on at 512, and against
    ``_prepare_memory_conditioned_features`` on a real memory bank (conditioning frame + 6 previous
    frames + pointers, the tpos indices of the contract); a padded batch of two objects with different
    R / P equals each object's unpadded run;
(b) memory encoder vs ``_encode_new_memory`` (binarized and sigmoid, object present and absent);
(c) track decoder vs ``_forward_sam_heads`` on memory-conditioned features (multimask and single-mask
    selection done as the runtime does it: tokens, pointer, no-object logits);
(d) the ONNX graphs in ONNX Runtime vs our PyTorch (dynamic B / R / P / N) at S = 512, memory attention
    also at S = 1024 (query chunks active);
(e) ``samdeploy export --video --image-size 512`` end to end: manifest entries + hashes, integrity check,
    determinism of the constants file, bad inputs (exit 2, nothing written).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("hydra")
pytest.importorskip("iopath")
pytest.importorskip("sam2")

from samdeploy.contract import PROMPT_INPUTS, SAM2_ENCODER_OUTPUTS, VIDEO_CONSTANTS, VIDEO_GRAPHS, Video  # noqa: E402
from samdeploy.models.sam2 import random_sam2_image  # noqa: E402
from samdeploy.models.sam2_video import (MemoryAttentionGraph, MemoryEncoderGraph, TrackDecoderGraph,  # noqa: E402
                                         attention_chunks)

TINY = "sam2.1_hiera_t"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SEED = 3
REL = 1e-4


def rel(a, b) -> float:
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.set_num_threads(2)
    model = random_sam2_image(TINY, seed=SEED)
    with torch.no_grad():  # object scores around 0: some random objects are absent
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.sub_(4.0)
    path = tmp_path_factory.mktemp("sam2video") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path, model


def _oracle(path: Path, size: int):
    from sam2.build_sam import build_sam2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = [f"++model.image_size={size}", "++model.binarize_mask_from_pts_for_mem_enc=true"]
        return build_sam2(CONFIG, str(path), device="cpu", hydra_overrides_extra=extra).eval()


@pytest.fixture(scope="module")
def pair512(weights):
    path, model = weights
    return model.with_image_size(512), _oracle(path, 512)


def _bank(g: torch.Generator, r: int, p: int, t: int):
    """Random memory bank of one object: memory [1,R,T,64], tpos indices, pointers [1,P,256], tpos [1,P]."""
    idx = [6] + [(j - 1) % 6 for j in range(1, r)]  # a conditioning frame + t_rel - 1
    time = torch.zeros(1, r, 7)
    for j, k in enumerate(idx):
        time[0, j, k] = 1.0
    tpos = (torch.arange(p, dtype=torch.float32) - 1.0)[None] / 15.0  # signed, one pointer "ahead"
    return torch.randn(1, r, t, 64, generator=g), time, idx, torch.randn(1, p, 256, generator=g), tpos


def _oracle_memory_attention(oracle, raw: torch.Tensor, memory, idx, ptrs, tpos) -> torch.Tensor:
    """The oracle's memory attention on the bank, assembled as _prepare_memory_conditioned_features does."""
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    _, c, h, w = raw.shape
    t, r, p = h * w, memory.shape[1], ptrs.shape[1]
    curr = raw.flatten(2).permute(2, 0, 1)
    curr_pos = oracle.image_encoder.neck.position_encoding(raw).flatten(2).permute(2, 0, 1)
    spatial = oracle.memory_encoder.position_encoding(torch.zeros(1, 64, h, w)).flatten(2).permute(2, 0, 1)
    mem = [memory[0, j].reshape(t, 1, 64) for j in range(r)]
    pos = [spatial + oracle.maskmem_tpos_enc[k] for k in idx]
    mem.append(ptrs.reshape(p, 1, 4, 64).permute(0, 2, 1, 3).flatten(0, 1))
    pos.append(oracle.obj_ptr_tpos_proj(get_1d_sine_pe(tpos[0], dim=c)).unsqueeze(1).repeat_interleave(4, dim=0))
    out = oracle.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=torch.cat(mem), memory_pos=torch.cat(pos),
                                  num_obj_ptr_tokens=4 * p)
    return out.permute(1, 2, 0).reshape(1, c, h, w)


# ---- (a) memory attention --------------------------------------------------------------------------------
@pytest.mark.parametrize("r,p,chunked", [(1, 1, False), (3, 5, True), (7, 16, False)])
def test_memory_attention_matches_oracle(pair512, r, p, chunked):
    ours, oracle = pair512
    graph = MemoryAttentionGraph(ours)
    if chunked:  # the S=1024 layout (several query chunks) on the small size
        graph.cross_chunks, graph.self_chunks = 4, 2
    h = ours.image_size // 16
    g = torch.Generator().manual_seed(10 * r + p)
    raw = torch.randn(1, 256, h, h, generator=g)
    memory, time, idx, ptrs, tpos = _bank(g, r, p, h * h)
    with torch.no_grad():
        got = graph(raw + ours.no_mem_embed.reshape(1, -1, 1, 1), memory, time, torch.ones(1, r), ptrs, tpos, torch.ones(1, p))
        want = _oracle_memory_attention(oracle, raw, memory, idx, ptrs, tpos)
    assert got.shape == want.shape == (1, 256, h, h)
    assert rel(got, want) <= REL, rel(got, want)


def test_memory_attention_matches_prepare_memory_conditioned_features(pair512):
    """Frame 9 of a 12-frame video: conditioning frame 0 (t_pos 0) and non-conditioning frames 1..8 -> the
    oracle reads frames 3..8 (t_rel 6..1) and pointers of frames 0 (cond, +9) and 8..1 (max_ptrs 12, t_diff_max 11);
    the contract's encoding of that bank gives the same conditioned features."""
    ours, oracle = pair512
    h = ours.image_size // 16
    g = torch.Generator().manual_seed(7)
    frames = {f: {"maskmem_features": torch.randn(1, 64, h, h, generator=g), "obj_ptr": torch.randn(1, 256, generator=g)}
              for f in range(9)}
    spatial = oracle.memory_encoder.position_encoding(torch.zeros(1, 64, h, h))
    for out in frames.values():
        out["maskmem_pos_enc"] = [spatial]
    output_dict = {"cond_frame_outputs": {0: frames[0]}, "non_cond_frame_outputs": {f: frames[f] for f in range(1, 9)}}
    raw = torch.randn(1, 256, h, h, generator=g)
    f, num_frames, v = 9, 12, Video()
    with torch.no_grad():
        want = oracle._prepare_memory_conditioned_features(
            frame_idx=f, is_init_cond_frame=False, current_vision_feats=[raw.flatten(2).permute(2, 0, 1)],
            current_vision_pos_embeds=[oracle.image_encoder.neck.position_encoding(raw).flatten(2).permute(2, 0, 1)],
            feat_sizes=[(h, h)], output_dict=output_dict, num_frames=num_frames)
        # the bank as the contract describes it
        mems = [(frames[0], v.num_maskmem - 1)] + [(frames[f - t_rel], t_rel - 1) for t_rel in range(v.num_maskmem - 1, 0, -1)]
        t_diff_max = min(num_frames, v.max_obj_ptrs_in_encoder) - 1
        ptrs = [(frames[0]["obj_ptr"], (f - 0) / t_diff_max)] + [(frames[f - d]["obj_ptr"], d / t_diff_max) for d in range(1, f)]
        memory = torch.stack([m["maskmem_features"][0].flatten(1).t() for m, _ in mems])[None]  # [1,R,T,64]
        time = torch.zeros(1, len(mems), 7)
        for j, (_, k) in enumerate(mems):
            time[0, j, k] = 1.0
        got = MemoryAttentionGraph(ours)(raw + ours.no_mem_embed.reshape(1, -1, 1, 1), memory, time, torch.ones(1, len(mems)),
                                         torch.cat([q for q, _ in ptrs])[None], torch.tensor([[d for _, d in ptrs]]),
                                         torch.ones(1, len(ptrs)))
    assert len(mems) == 7 and len(ptrs) == 9
    assert rel(got, want) <= REL, rel(got, want)


def test_memory_attention_padding_is_exact(pair512):
    ours, _ = pair512
    graph = MemoryAttentionGraph(ours)
    h = ours.image_size // 16
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(1, 256, h, h, generator=g)
    a, b = _bank(g, 2, 3, h * h), _bank(g, 5, 9, h * h)
    with torch.no_grad():
        alone = [graph(emb, m, t, torch.ones(1, m.shape[1]), q, d, torch.ones(1, q.shape[1])) for m, t, _, q, d in (a, b)]
        pad = lambda x, n, dim: torch.cat([x, torch.randn(*x.shape[:dim], n - x.shape[dim], *x.shape[dim + 1:], generator=g) * 3], dim)
        memory = torch.cat([pad(a[0], 5, 1), b[0]])
        time = torch.cat([pad(a[1], 5, 1), b[1]])
        ptrs = torch.cat([pad(a[3], 9, 1), b[3]])
        tpos = torch.cat([pad(a[4], 9, 1), b[4]])
        mvalid = torch.tensor([[1.0, 1, 0, 0, 0], [1] * 5])
        pvalid = torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0, 0], [1] * 9])
        both = graph(emb, memory, time, mvalid, ptrs, tpos, pvalid)
    for i in range(2):
        assert rel(both[i:i + 1], alone[i]) <= 1e-6, (i, rel(both[i:i + 1], alone[i]))


# ---- (b) memory encoder ------------------------------------------------------------------------------------
@pytest.mark.parametrize("binarize", [True, False])
def test_memory_encoder_matches_oracle(pair512, binarize):
    ours, oracle = pair512
    s = ours.image_size
    h = s // 16
    g = torch.Generator().manual_seed(11)
    raw = torch.randn(1, 256, h, h, generator=g)
    obj = torch.tensor([[2.5], [-1.5], [0.0]])  # present, absent, absent (score <= 0)
    low = torch.randn(3, 1, 4 * h, 4 * h, generator=g) * 8.0
    low = torch.where(obj[:, :, None, None] > 0, low, torch.full_like(low, -1024.0))  # _forward_sam_heads' NO_OBJ_SCORE
    with torch.no_grad():
        got = MemoryEncoderGraph(ours)(raw + ours.no_mem_embed.reshape(1, -1, 1, 1), low, obj, torch.full((3,), float(binarize)))
        high = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)  # as _forward_sam_heads
        want, pos = oracle._encode_new_memory(current_vision_feats=[raw.expand(3, -1, -1, -1).flatten(2).permute(2, 0, 1)],
                                              feat_sizes=[(h, h)], pred_masks_high_res=high, object_score_logits=obj,
                                              is_mask_from_pts=binarize)
    assert got.shape == (3, h * h, 64)
    assert rel(got, want.flatten(2).transpose(1, 2)) <= REL, rel(got, want.flatten(2).transpose(1, 2))
    # the stored positional encoding is the constant the memory-attention graph adds
    assert rel(MemoryAttentionGraph(ours).mem_pos[0, 0], pos[0][0].flatten(1).t()) <= 1e-7


# ---- (c) track decoder -----------------------------------------------------------------------------------------
def _select(iou, low, obj, ptrs, multimask: bool):
    """The runtime's selection (runtime/tracker.py): best multimask token and its pointer, or token 0 with the
    dynamic-stability switch on the mask (pointer of token 0); absent objects get NO_OBJ_SCORE logits."""
    from samdeploy.models.variants import contract_for
    from samdeploy.runtime.predictor import _dynamic_single_mask

    iou, low, obj, ptrs = (np.asarray(x) for x in (iou, low, obj, ptrs))
    rows = np.arange(iou.shape[0])
    if multimask:
        pick = 1 + np.argmax(iou[:, 1:], axis=1)
        sel_iou, sel_low, ptr = iou[rows, pick], low[rows, pick], ptrs[rows, pick]
    else:
        si, sl = _dynamic_single_mask(iou, low, contract_for(TINY, "x").decoder)
        sel_iou, sel_low, ptr = si[:, 0], sl[:, 0], ptrs[:, 0]
    return sel_iou, np.where(obj.reshape(-1, 1, 1) > 0, sel_low, -1024.0), ptr


@pytest.mark.parametrize("prompt", ["none", "click", "clicks_and_box"])
def test_track_decoder_matches_oracle(pair512, prompt):
    ours, oracle = pair512
    s = ours.image_size
    h = s // 16
    b = 4
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():  # memory-conditioned features (our memory attention on a random bank)
        memory, time, _, ptrs, tpos = _bank(g, 3, 4, h * h)
        emb = torch.randn(1, 256, h, h, generator=g)
        cond = MemoryAttentionGraph(ours)(emb, memory, time, torch.ones(1, 3), ptrs, tpos, torch.ones(1, 4))
        cond = cond + torch.randn(b, 256, h, h, generator=g) * 0.5  # objects differ
    f0 = torch.randn(1, 32, 4 * h, 4 * h, generator=g)
    f1 = torch.randn(1, 64, 2 * h, 2 * h, generator=g)
    if prompt == "none":  # _forward_sam_heads inserts a padding point when there are none, then the prompt
        clicks, labels = torch.zeros(b, 1, 2), -torch.ones(b, 1)  # encoder pads again: TWO padding tokens
    elif prompt == "click":
        clicks, labels = torch.rand(b, 1, 2, generator=g) * s, torch.ones(b, 1)
    else:
        lo = torch.rand(b, 1, 2, generator=g) * s / 2
        clicks = torch.cat([lo, lo + s / 3, torch.rand(b, 1, 2, generator=g) * s], dim=1)
        labels = torch.tensor([[2.0, 3.0, 0.0]] * b)
    n_points = 0 if prompt == "none" else clicks.shape[1]
    multimask = n_points <= 1  # _use_multimask: multimask_min_pt_num 0 <= N <= multimask_max_pt_num 1
    coords = torch.cat([clicks, torch.zeros(b, 1, 2)], dim=1)  # SAM2 always appends the padding point
    labs = torch.cat([labels, -torch.ones(b, 1)], dim=1)
    mask_in, has = torch.zeros(b, 1, 4 * h, 4 * h), torch.zeros(b)
    heads = [m.sam_mask_decoder.pred_obj_score_head.layers[-1].bias for m in (ours, oracle)]
    saved = [x.detach().clone() for x in heads]
    with torch.no_grad():
        try:  # shift the object-score head so two objects are present and two absent
            score = TrackDecoderGraph(ours)(cond, f0, f1, coords, labs, mask_in, has)[2].reshape(-1).sort().values
            for x in heads:
                x.sub_(float(score[1] + score[2]) / 2)
            iou, low, obj, obj_ptrs = TrackDecoderGraph(ours)(cond, f0, f1, coords, labs, mask_in, has)
            points = None if prompt == "none" else {"point_coords": clicks, "point_labels": labels.int()}  # SAM2Base keys
            want = oracle._forward_sam_heads(backbone_features=cond, point_inputs=points, mask_inputs=None,
                                             high_res_features=[f0.expand(b, -1, -1, -1), f1.expand(b, -1, -1, -1)],
                                             multimask_output=multimask)
        finally:
            for x, v in zip(heads, saved):
                x.copy_(v)
    _, _, w_ious, w_low, _, w_ptr, w_obj = want
    present = (obj > 0).reshape(-1).numpy()
    assert present.any() and not present.all(), obj.reshape(-1)  # both branches of fixed_no_obj_ptr run
    sel_iou, sel_low, ptr = _select(iou, low, obj, obj_ptrs, multimask)
    assert rel(obj, w_obj) <= REL
    assert rel(sel_low, w_low[:, 0]) <= REL, rel(sel_low, w_low[:, 0])
    assert rel(ptr, w_ptr) <= REL, rel(ptr, w_ptr)
    if multimask:
        assert rel(iou[:, 1:], w_ious) <= REL
    np.testing.assert_array_equal(np.asarray(obj_ptrs)[~present], np.broadcast_to(ours.no_obj_ptr.detach().numpy()[:, None],
                                                                                    (int((~present).sum()), 4, 256)))


# ---- (d) ONNX vs PyTorch, (e) the CLI -----------------------------------------------------------------------------
def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def export512(weights, tmp_path_factory):
    """`samdeploy export --checkpoint <file> --video --image-size 512 --graphs decoder` (the encoder's export is
    covered elsewhere; skipping it keeps this file fast)."""
    from samdeploy.cli.main import main

    path, _ = weights
    out = tmp_path_factory.mktemp("video_export") / "out"
    assert main(["export", "--checkpoint", str(path), "--video", "--image-size", "512", "--graphs", "decoder",
                 "--out", str(out)]) == 0
    return out


def test_export_cli_manifest_and_integrity(export512, tmp_path):
    from samdeploy.export.manifest import read_manifest, verify_files

    man = read_manifest(export512)
    c = man["contract"]
    v = Video.from_dict(c["video"])
    assert c["preprocess"]["input_size"] == 512 and c["prompts"]["frame_size"] == 512
    assert c["decoder"]["low_res_size"] == 128 and c["decoder"]["embedding_shape"] == [256, 32, 32]
    assert v.image_size == 512 and v.tokens_per_frame == 1024 and v.add_tpos_enc_to_obj_ptrs
    assert man["source"]["image_size"] == 512
    for role, name in v.files.items():
        entry = man["files"][role]
        assert entry["path"] == name and (export512 / name).stat().st_size == entry["size"]
    assert set(VIDEO_GRAPHS) | {VIDEO_CONSTANTS, "decoder"} == set(man["files"])
    assert verify_files(export512, man) == []
    with np.load(export512 / v.constants_file) as z:
        assert {k: z[k].shape for k in z.files} == {"no_mem_embed": (256,), "no_obj_ptr": (256,),
                                                    "mask_downsample_weight": (1, 1, 4, 4), "mask_downsample_bias": (1,)}
    for role in VIDEO_GRAPHS:  # every file carries the same contract, names as the contract says
        from samdeploy.contract import read_onnx_contract

        contract, graph_role = read_onnx_contract(str(export512 / v.files[role]))
        assert graph_role == role and contract.to_dict() == c
        sess = _session(export512 / v.files[role])
        assert tuple(i.name for i in sess.get_inputs()) == v.graph_inputs(role)
        assert tuple(o.name for o in sess.get_outputs()) == v.graph_outputs(role)
    # a damaged video file is caught by the integrity checks (export.manifest and the runtime's resolver; this
    # export has no encoder, so a copy lists the decoder in its place for the resolver)
    import shutil

    from samdeploy.errors import ContractError
    from samdeploy.runtime.backends.onnxruntime import find_graphs

    copy = tmp_path / "copy"
    shutil.copytree(export512, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["files"]["encoder"] = raw["files"]["decoder"]
    (copy / "manifest.json").write_text(json.dumps(raw))
    find_graphs(str(copy))
    target = copy / v.memory_encoder_file
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    problems = verify_files(copy, man)
    assert problems and "memory_encoder" in problems[0]
    with pytest.raises(ContractError, match="memory_encoder"):
        find_graphs(str(copy))


def test_export_cli_bad_inputs(tmp_path, capsys):
    from samdeploy.cli.main import main

    cases = [
        ["--model", "mobile_sam", "--random-weights", "--video"],  # not SAM2
        ["--model", "sam2.1_hiera_t", "--random-weights", "--image-size", "500"],  # not a multiple of 32
        ["--model", "mobile_sam", "--random-weights", "--image-size", "512"],  # not SAM2
    ]
    for i, args in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["export", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and ("--video" in err or "--image-size" in err), err
        assert not out.exists()


def _ort_vs_torch(path, graph, feeds: dict) -> list[float]:
    sess = _session(path)
    outs = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
    with torch.no_grad():
        want = graph(*feeds.values())
    want = want if isinstance(want, tuple) else (want,)
    assert [o.shape for o in outs] == [tuple(w.shape) for w in want]
    return [rel(o, w) for o, w in zip(outs, want)]


def test_onnx_video_graphs_match_pytorch_512(export512, pair512):
    ours, _ = pair512
    v = Video()
    h = 32
    g = torch.Generator().manual_seed(31)
    emb = torch.randn(1, 256, h, h, generator=g)
    for b, r, p in [(1, 1, 1), (2, 3, 16)]:
        memory, time, _, ptrs, tpos = _bank(g, r, p, h * h)
        feeds = dict(zip(v.graph_inputs("memory_attention"),
                         (emb, memory.expand(b, -1, -1, -1) + torch.randn(b, 1, 1, 1, generator=g), time.expand(b, -1, -1),
                          torch.ones(b, r), ptrs.expand(b, -1, -1), tpos.expand(b, -1), torch.ones(b, p))))
        errs = _ort_vs_torch(export512 / v.memory_attention_file, MemoryAttentionGraph(ours), feeds)
        assert max(errs) <= REL, (b, r, p, errs)
    for b in (1, 3):
        low = torch.randn(b, 1, 4 * h, 4 * h, generator=g) * 8
        feeds = dict(zip(v.graph_inputs("memory_encoder"),
                         (emb, low, torch.randn(b, 1, generator=g), (torch.arange(b) % 2).float())))
        errs = _ort_vs_torch(export512 / v.memory_encoder_file, MemoryEncoderGraph(ours), feeds)
        assert max(errs) <= REL, (b, errs)
    for b, n in [(1, 0), (3, 4)]:
        feeds = dict(zip(v.graph_inputs("track_decoder"),
                         (torch.randn(b, 256, h, h, generator=g), torch.randn(1, 32, 4 * h, 4 * h, generator=g),
                          torch.randn(1, 64, 2 * h, 2 * h, generator=g), torch.rand(b, n, 2, generator=g) * 512,
                          torch.tensor([[1.0, 0.0, 2.0, 3.0][:n]] * b).reshape(b, n), torch.randn(b, 1, 4 * h, 4 * h, generator=g),
                          (torch.arange(b) % 2).float())))
        errs = _ort_vs_torch(export512 / v.track_decoder_file, TrackDecoderGraph(ours), feeds)
        assert max(errs) <= REL, (b, n, errs)


def test_onnx_memory_attention_1024(weights, tmp_path):
    """S = 1024: the graph splits the queries into chunks (static Split / Concat) and stays exact."""
    from samdeploy.export import exporter, wrappers

    _, model = weights
    contract = model.make_contract(video=True)
    assert attention_chunks(4096, 7 * 4096 + 64) == 8 and attention_chunks(1024, 7 * 1024 + 64) == 1
    with torch.no_grad():
        module = wrappers.video_graph(model, "memory_attention")
        names_in, names_out, axes = wrappers.video_io(contract, "memory_attention")
        proto = exporter.trace_graph(module, wrappers.video_example(model, "memory_attention"), names_in, names_out, axes,
                                     17, tmp_path)
    report = exporter.finish_graph(proto, "memory_attention", contract)
    assert report.ok and report.op_counts.get("Softmax", 0) == 4 * (8 + 1) and not {"OneHot", "Tile"} & set(report.op_counts)
    import onnx

    onnx.save(proto, str(tmp_path / "ma.onnx"))
    g = torch.Generator().manual_seed(41)
    memory, time, _, ptrs, tpos = _bank(g, 1, 2, 4096)
    feeds = dict(zip(contract.video.graph_inputs("memory_attention"),
                     (torch.randn(1, 256, 64, 64, generator=g), memory, time, torch.ones(1, 1), ptrs, tpos, torch.ones(1, 2))))
    errs = _ort_vs_torch(tmp_path / "ma.onnx", module, feeds)
    assert max(errs) <= REL, errs


def test_image_path_at_512(pair512, export512):
    """--image-size 512 for the image graphs: encoder (PyTorch) vs the oracle's forward_image (as
    SAM2ImagePredictor.set_image), the exported decoder.onnx vs PyTorch with 128 x 128 mask inputs."""
    ours, oracle = pair512
    g = torch.Generator().manual_seed(51)
    image = torch.rand(1, 3, 512, 512, generator=g) * 255.0
    with torch.no_grad():
        mine = ours.encode(image)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        _, feats, _, _ = oracle._prepare_backbone_features(oracle.forward_image((image / 255.0 - mean) / std))
        feats[-1] = feats[-1] + oracle.no_mem_embed
        ref = [f.permute(1, 2, 0).reshape(1, -1, s, s) for f, s in zip(feats, (128, 64, 32))]
    for a, b in zip(mine, (ref[2], ref[0], ref[1])):
        assert a.shape == b.shape and rel(a, b) <= 1e-5, (a.shape, rel(a, b))
    coords = torch.tensor([[[100.0, 200.0], [0.0, 0.0]], [[300.0, 50.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    feeds = dict(zip([*SAM2_ENCODER_OUTPUTS, *PROMPT_INPUTS],
                     (*mine, coords, labels, torch.randn(2, 1, 128, 128, generator=g), torch.tensor([1.0, 0.0]))))
    errs = _ort_vs_torch(export512 / "decoder.onnx", lambda *a: ours.decode(*a), feeds)
    assert max(errs) <= REL, errs


def test_sam2_0_video_graphs_match_oracle(tmp_path):
    """SAM 2.0 (sam2_hiera_t): pointers get no temporal position (add_tpos_enc_to_obj_ptrs False) and memories
    no no_obj_embed_spatial; the graphs keep the same inputs."""
    from sam2.build_sam import build_sam2

    model = random_sam2_image("sam2_hiera_t", seed=SEED)
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = build_sam2("configs/sam2/sam2_hiera_t.yaml", str(path), device="cpu",
                            hydra_overrides_extra=["++model.image_size=512"]).eval()
    ours = model.with_image_size(512)
    assert not oracle.add_tpos_enc_to_obj_ptrs and not ours.video_contract().add_tpos_enc_to_obj_ptrs
    h = 32
    g = torch.Generator().manual_seed(61)
    raw = torch.randn(1, 256, h, h, generator=g)
    memory, time, idx, ptrs, tpos = _bank(g, 2, 3, h * h)
    with torch.no_grad():
        got = MemoryAttentionGraph(ours)(raw + ours.no_mem_embed.reshape(1, -1, 1, 1), memory, time, torch.ones(1, 2), ptrs,
                                         tpos, torch.ones(1, 3))
        curr_pos = oracle.image_encoder.neck.position_encoding(raw).flatten(2).permute(2, 0, 1)
        spatial = oracle.memory_encoder.position_encoding(torch.zeros(1, 64, h, h)).flatten(2).permute(2, 0, 1)
        mem = torch.cat([memory[0, j].reshape(h * h, 1, 64) for j in range(2)] + [ptrs.reshape(3, 1, 4, 64).permute(0, 2, 1, 3).flatten(0, 1)])
        pos = torch.cat([spatial + oracle.maskmem_tpos_enc[k] for k in idx] + [torch.zeros(12, 1, 64)])  # obj_pos = zeros
        want = oracle.memory_attention(curr=[raw.flatten(2).permute(2, 0, 1)], curr_pos=[curr_pos], memory=mem,
                                       memory_pos=pos, num_obj_ptr_tokens=12).permute(1, 2, 0).reshape(1, 256, h, h)
        assert rel(got, want) <= REL, rel(got, want)
        low = torch.randn(2, 1, 4 * h, 4 * h, generator=g) * 8.0
        obj = torch.tensor([[1.0], [-1.0]])
        got = MemoryEncoderGraph(ours)(raw + ours.no_mem_embed.reshape(1, -1, 1, 1), low, obj, torch.zeros(2))
        high = F.interpolate(low, size=(512, 512), mode="bilinear", align_corners=False)
        want, _ = oracle._encode_new_memory(current_vision_feats=[raw.expand(2, -1, -1, -1).flatten(2).permute(2, 0, 1)],
                                            feat_sizes=[(h, h)], pred_masks_high_res=high, object_score_logits=obj,
                                            is_mask_from_pts=False)
        assert rel(got, want.flatten(2).transpose(1, 2)) <= REL
