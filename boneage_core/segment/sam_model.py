"""Loading Segment Anything: MobileSAM (TinyViT encoder) by default, official ViT-B/L/H on request.

The result is always a stock ``segment_anything.modeling.Sam`` so that ``SamPredictor`` works on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..settings import MOBILE_SAM_SHA256, get_settings
from .weights import sha256_file

#: Official checkpoint sizes (bytes, rounded) used to guess the type when the name does not say.
_SIZE_HINTS = {"vit_t": 40e6, "vit_b": 375e6, "vit_l": 1.25e9, "vit_h": 2.56e9}


class SamWeightsError(RuntimeError):
    """The SAM checkpoint is missing, corrupt or of an unknown type."""


@dataclass(frozen=True)
class SamInfo:
    """What produced a mask: for provenance in manifests and logs."""

    model_type: str
    checkpoint: str
    sha256: str


def guess_model_type(path: Path) -> str:
    """'vit_t' | 'vit_b' | 'vit_l' | 'vit_h' from the file name, else from the file size."""
    name = path.name.lower()
    for key, tags in {
        "vit_t": ("mobile", "vit_t"),
        "vit_b": ("vit_b",),
        "vit_l": ("vit_l",),
        "vit_h": ("vit_h",),
    }.items():
        if any(tag in name for tag in tags):
            return key
    size = path.stat().st_size
    return min(_SIZE_HINTS, key=lambda k: abs(_SIZE_HINTS[k] - size))


def _build_vit_t() -> torch.nn.Module:
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and registry-overwrite noise
        from mobile_sam.modeling import TinyViT

    return Sam(
        image_encoder=TinyViT(
            img_size=1024,
            in_chans=3,
            num_classes=1000,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(
    checkpoint: Path | None = None, model_type: str | None = None, device: str | None = None
) -> tuple[torch.nn.Module, SamInfo]:
    """Build SAM and load ``checkpoint`` strictly. Returns ``(sam, info)`` in eval mode.

    The default checkpoint (MobileSAM) is verified against its published sha256.
    """
    settings = get_settings()
    path = Path(checkpoint or settings.sam_checkpoint)
    if not path.is_file():
        raise SamWeightsError(
            f"SAM checkpoint not found at {path}. Run `make weights` (or set BONEAGE_SAM_CHECKPOINT "
            "to an official sam_vit_b/l/h checkpoint)."
        )
    model_type = model_type or settings.sam_model_type
    if model_type == "auto":
        model_type = guess_model_type(path)
    digest = sha256_file(path)
    if model_type == "vit_t" and path.name == "mobile_sam.pt" and digest != MOBILE_SAM_SHA256:
        raise SamWeightsError(f"{path} has sha256 {digest}, not the official MobileSAM checkpoint")
    if model_type == "vit_t":
        sam = _build_vit_t()
    elif model_type in ("vit_b", "vit_l", "vit_h"):
        from segment_anything import sam_model_registry

        sam = sam_model_registry[model_type](checkpoint=None)
    else:
        raise SamWeightsError(f"unknown SAM model type {model_type!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a SAM checkpoint
        raise SamWeightsError(f"{path} is not a valid {model_type} SAM checkpoint: {exc}") from exc
    sam.to(device or settings.resolved_device()).eval()
    return sam, SamInfo(model_type=model_type, checkpoint=str(path), sha256=digest)


@lru_cache(maxsize=2)
def cached_sam(
    checkpoint: str | None = None, model_type: str | None = None, device: str | None = None
) -> tuple[torch.nn.Module, SamInfo]:
    """Process-wide cached :func:`load_sam` (the app and batch CLI load SAM once)."""
    return load_sam(Path(checkpoint) if checkpoint else None, model_type, device)
