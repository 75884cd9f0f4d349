"""samdeploy: Segment-Anything-family models from checkpoint to verified edge deployment.

Pipeline (one subpackage per stage, see ARCHITECTURE.md)::

    samdeploy.models       PyTorch model zoo + checkpoint loading        (torch)
    samdeploy.export       encoder.onnx / decoder.onnx / manifest.json   (torch)
    samdeploy.check        PyTorch <-> ONNX parity gate                  (torch)
    samdeploy.calibration  Hessian-guided INT8 PTQ -> QDQ ONNX           (torch)
    samdeploy.trt          TensorRT engine builder, doctor               (tensorrt, optional)
    samdeploy.runtime      Predictor / MaskGenerator / stream / bench    (numpy + onnxruntime, NO torch)

The top-level package deliberately imports nothing heavy: ``import samdeploy`` must work on a
device that has only the runtime dependencies.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
