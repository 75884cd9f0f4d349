"""TensorRT engines for samdeploy graphs (``samdeploy build`` / ``samdeploy doctor``).

Importing this package (and every module except the TensorRT-driving half of ``build``) needs
neither TensorRT nor a GPU::

    profiles.py         min/opt/max shapes generated from the contract (+ ONNX dims)
    mixed_precision.py  FP16 ONNX with LayerNorm/Softmax/Fourier features kept FP32 (TensorRT 11 path)
    trtexec.py          the equivalent trtexec command line
    manifest.py         engine manifest + refusal of engines built for another TensorRT/GPU
    environment.py      TensorRT/CUDA/cuDNN/GPU/JetPack/nvpmodel probe
    preflight.py        ONNX checks for TensorRT's parser (doctor)
    known_issues.py     TensorRT versions known to miscompile a family's graph (doctor, build, manifest)
    build.py            plan_build (no TensorRT) + build_engine (TensorRT 10.x / 11.x Python API)
    api_surface/        the real TensorRT Python API per version (scripts/record_trt_api.py)
"""
