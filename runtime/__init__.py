"""The lean device runtime (NumPy + OpenCV + ONNX Runtime/TensorRT; never imports torch).

Public API::

    from samdeploy.runtime import Predictor, load_model
    pred = Predictor("out/mobile_sam", threads=2)         # ONNX Runtime CPU by default
    pred.set_image(rgb)                                   # HxWx3 uint8
    masks, scores, low_res = pred.predict(point_coords=[[x, y]], point_labels=[1])

* :class:`MaskGenerator` (``amg.py``) -- segment everything: SAM grid, TinySAM hierarchical, box prompts;
  ``stream.py`` -- video/camera/RTSP streaming.
* :class:`Predictor` (``predictor.py``) -- SamPredictor semantics, batched prompts, embedding reuse.
* :class:`Tracker` (``tracker.py``) -- SAM2/SAM2.1 video tracking on exported memory graphs
  (SAM2VideoPredictor semantics, multi-object, bounded memory).
* :func:`load_model` / :class:`GraphPair` / :class:`Backend` (``backends/``) -- encoder + decoder
  backends (ONNX Runtime, TensorRT) behind one interface, paired by their model contract.
* ``transforms.py`` -- contract-driven pre/post-processing; ``prompts.py`` -- prompt validation/packing;
  ``overlay.py`` -- drawing; ``bench.py`` -- latency benchmark.
"""

from .amg import MaskGenerator
from .backends import Backend, BackendBase, GraphPair, load_model
from .predictor import Predictor
from .prompts import PromptLimits
from .tracker import Tracker

__all__ = ["Backend", "BackendBase", "GraphPair", "MaskGenerator", "Predictor", "PromptLimits", "Tracker", "load_model"]
