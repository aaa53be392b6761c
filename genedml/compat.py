"""Make timm importable with a CPU torch wheel next to PyPI's CUDA-built torchvision.

PyPI ships torchvision 0.28.0 (the release pinned to torch 2.13.0) built against CUDA. Beside the CPU
torch wheel its compiled extension cannot load, which torchvision tolerates everywhere except in two
fake-op registrations for ``torchvision::nms`` / ``torchvision::qnms`` that run at import time and fail
with "operator torchvision::nms does not exist". timm imports torchvision, so timm fails too.

``ensure_torchvision()`` declares those two operator schemas before torchvision is imported, and only
when torch is a CPU build whose torchvision extension really cannot load. On CUDA torch, or with a CPU
build of torchvision, it does nothing. torchvision's compiled ops (nms, roi_align, image decoders) stay
unavailable on CPU; genedml never calls them (images are decoded with OpenSlide / Pillow).
"""

from __future__ import annotations

import importlib.util
import os
import sys

_schemas = None  # the torch.library.Library must stay alive as long as the process


def ensure_torchvision() -> None:
    global _schemas
    if "torchvision" in sys.modules or _schemas is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    if torch.version.cuda is not None:
        return
    extension = os.path.join(list(spec.submodule_search_locations)[0], "_C.so")
    try:
        torch.ops.load_library(extension)
        return
    except (OSError, ImportError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _schemas = lib


def import_timm():
    """Import timm after making torchvision importable; use this instead of ``import timm``."""
    ensure_torchvision()
    import timm

    return timm
