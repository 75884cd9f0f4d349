"""The PyTorch model zoo: our own SAM-family modules with the official key names.

Importing this package is cheap and torch-free; the torch modules are imported on use::

    from samdeploy.models.build import build_model, random_model   # torch
    from samdeploy.models.checkpoint import load_checkpoint          # torch
    from samdeploy.models.variants import VARIANTS                   # no torch
    from samdeploy.models.registry import REGISTRY, download         # no torch

Layout (one module per official building block)::

    common.py             LayerNorm2d, MLPBlock, MLP
    image_encoder_vit.py  SAM ViT (windowed + global attention, decomposed rel-pos) + neck
    tiny_vit.py           TinyViT-5M encoder of MobileSAM / TinySAM (+ neck)
    prompt_encoder.py     points/boxes/mask prompts -> sparse + dense embeddings
    transformer.py        TwoWayTransformer
    mask_decoder.py       4 mask tokens + IoU head
    sam.py                Sam.encode / Sam.decode: the contract in PyTorch
    variants.py           the variant table (no torch)
    build.py              build_model / random_model
    init.py               deterministic seeded weights, realistic decoder output scale
    checkpoint.py         load_checkpoint / detect_variant
    registry.py           official checkpoints + download (no torch)
"""
