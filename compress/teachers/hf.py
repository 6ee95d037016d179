"""Hugging Face CLIP-family teachers (AltCLIP, Chinese-CLIP, CLIP) behind the `Teacher` protocol.

Loaded the way a user would (`from_pretrained` on a hub id or a local folder), so the teacher a recipe names is
exactly the checkpoint that gets distilled. Preprocessing is redone here with torch ops on [0, 1] pixels, because
the student's data pipeline already produced tensors and teacher/student preprocessing may differ.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import (
    AltCLIPModel,
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    ChineseCLIPModel,
    CLIPModel,
    PreTrainedModel,
)

from compress.errors import UserError
from compress.teachers.base import ImageFeatures, TextFeatures

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES: dict[str, type[PreTrainedModel]] = {
    "altclip": AltCLIPModel,
    "chinese_clip": ChineseCLIPModel,
    "clip": CLIPModel,
}
_TYPES = ", ".join(SUPPORTED_MODEL_TYPES)
# Context length each family was trained with; the text towers accept more positions but were never trained on them.
_TRAINED_TEXT_LEN = {"altclip": 77, "chinese_clip": 52, "clip": 77}
# OpenAI CLIP preprocessing, used when a checkpoint ships no image processor config (AltCLIP/Chinese-CLIP use it too).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HUB_PROBE_TIMEOUT_S = 3.0


class HFTeacher:
    """A frozen CLIP-family model that maps [0, 1] pixels and raw strings to teacher features."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: object,
        *,
        name: str,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        map_layers: Sequence[int] | None = None,
        max_text_len: int | None = None,
    ) -> None:
        model_type = model.config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(f"teacher {name!r} is a {model_type!r} model; supported teacher model types: {_TYPES}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.model_type = model_type
        self.embed_dim = int(model.config.projection_dim)
        self.image_size = int(image_size)
        vision = model.config.vision_config
        self.patch_size = _square(vision.patch_size, "patch size", name)
        self.grid = self.image_size // self.patch_size
        # Checkpoints whose processor size differs from the position table get interpolated positions.
        self._interpolate_pos = self.image_size != _square(vision.image_size, "image size", name)
        self.map_layers = _resolve_map_layers(map_layers, int(vision.num_hidden_layers))
        self.map_channels = [int(vision.hidden_size)] * len(self.map_layers)
        self.max_text_len = max_text_len or _default_text_len(model_type, model.config.text_config, tokenizer)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        # CLIP's get_text_features takes no token_type_ids; BERT/RoBERTa towers do.
        self._text_inputs = {"input_ids", "attention_mask"} | (
            {"token_type_ids"} if model_type != "clip" else set()
        )

    @classmethod
    def from_pretrained(
        cls,
        spec: str,
        map_layers: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_text_len: int | None = None,
    ) -> HFTeacher:
        """Load a hub id (e.g. `BAAI/AltCLIP`) or a local checkpoint folder; failures become one-line UserErrors."""
        source, local = _locate(spec)
        # Offline (forced or detected) means cache-only: never sit through the hub client's retry/backoff loop.
        offline = local or _offline_forced() or not _hub_reachable()
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=offline)
            model_type = getattr(config, "model_type", None)
            if model_type not in SUPPORTED_MODEL_TYPES:
                raise UserError(
                    f"teacher {spec!r} is a {model_type!r} model, not a supported CLIP-family model; "
                    f"supported teacher model types: {_TYPES}"
                )
            model = SUPPORTED_MODEL_TYPES[model_type].from_pretrained(source, dtype=dtype, local_files_only=offline)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - every load failure must reach the user as one line
            raise _load_error(spec, local, offline, exc) from exc
        image_size, mean, std = _image_preprocessing(source, offline, config)
        return cls(
            model.to(device),
            tokenizer,
            name=spec,
            image_size=image_size,
            mean=mean,
            std=std,
            map_layers=map_layers,
            max_text_len=max_text_len,
        )

    @property
    def logit_scale(self) -> float:
        """Multiplier on cosine similarities (exp of the stored log-scale; ~100 for trained CLIPs)."""
        return float(self.model.logit_scale.detach().float().exp())

    def num_params(self) -> int:
        """Parameters of both towers and both projections (the logit scale is not a weight worth counting)."""
        m = self.model
        parts = (m.vision_model, m.text_model, m.visual_projection, m.text_projection)
        return sum(p.numel() for part in parts for p in part.parameters())

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        """Projected image embedding (as `get_image_features`) plus patch-token maps of `map_layers`, NCHW."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        with torch.inference_mode():
            x = self._preprocess(pixels)
            # get_image_features is vision_model -> pooler_output -> visual_projection in every transformers
            # version; calling the tower ourselves also gives the hidden states it discards.
            out = self.model.vision_model(
                pixel_values=x,
                interpolate_pos_encoding=self._interpolate_pos,
                output_hidden_states=True,
                return_dict=True,
            )
            embedding = self.model.visual_projection(out.pooler_output)
            hidden = out.hidden_states  # embeddings output, then one entry per layer
            b = x.shape[0]
            maps = [
                hidden[i + 1][:, 1:, :].reshape(b, self.grid, self.grid, -1).permute(0, 3, 1, 2)
                for i in self.map_layers
            ]
        return ImageFeatures(embedding=_plain(embedding), maps=[_plain(m) for m in maps])

    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        """Projected text embedding (as `get_text_features`) plus the pooled hidden state fed to the projection."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("encode_text needs at least one string")
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._text_inputs}
        # Each family pools differently (CLS, EOS, projected CLS); the projection's input is the pooled state.
        with _capture_input(self.model.text_projection) as pooled, torch.inference_mode():
            embedding = _features(self.model.get_text_features(**inputs))
        return TextFeatures(embedding=_plain(embedding), hidden=_plain(pooled[0]))

    def _preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resize to the teacher's square input (bicubic + antialias, like PIL) and normalise with its mean/std."""
        x = pixels.to(device=self.device, dtype=torch.float32)
        size = (self.image_size, self.image_size)
        if tuple(x.shape[-2:]) != size:
            # Clamp: bicubic overshoots, and PIL's uint8 resize in the reference processors saturates.
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0.0, 1.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    def __repr__(self) -> str:
        return (
            f"HFTeacher({self.name!r}, type={self.model_type}, embed_dim={self.embed_dim}, "
            f"image_size={self.image_size}, map_layers={self.map_layers})"
        )


def _plain(t: torch.Tensor) -> torch.Tensor:
    """float32, contiguous, and not an inference tensor: those cannot be saved for backward in a student's loss."""
    return t.float().contiguous().clone()


def _features(out: object) -> torch.Tensor:
    """transformers 5.x get_*_features return a ModelOutput with the projection in `pooler_output`; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@contextmanager
def _capture_input(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def _square(value: int | Sequence[int], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    h, w = value
    if h != w:
        raise UserError(f"teacher {name!r} has a non-square {what} {h}x{w}; only square teacher inputs are supported")
    return int(h)


def _resolve_map_layers(map_layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """Default: three evenly spaced blocks ending with the last (e.g. 3, 7, 11 of 12) - early, mid and late features."""
    if map_layers is None:
        return sorted({num_layers * (k + 1) // 3 - 1 for k in range(3)} - {-1})
    resolved = []
    for layer in map_layers:
        if not -num_layers <= int(layer) < num_layers:
            raise UserError(
                f"teacher map layer {layer} is out of range for a {num_layers}-layer vision tower "
                f"(use 0..{num_layers - 1}, or negative indices from the end)"
            )
        resolved.append(int(layer) % num_layers)
    return resolved


def _default_text_len(model_type: str, text_config: object, tokenizer: object) -> int:
    """Trained context length, capped by what the position table and tokenizer can hold."""
    positions = int(text_config.max_position_embeddings)
    if model_type == "altclip":  # RoBERTa positions start after the padding index
        positions -= int(text_config.pad_token_id or 0) + 1
    limit = min(_TRAINED_TEXT_LEN[model_type], positions)
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limit = min(limit, tokenizer_max)
    return limit


def _image_preprocessing(source: str, offline: bool, config: object) -> tuple[int, tuple, tuple]:
    """(image size, mean, std) from the checkpoint's image processor; CLIP defaults at the model's size if absent."""
    default_size = _square(config.vision_config.image_size, "image size", source)
    try:
        proc = AutoImageProcessor.from_pretrained(source, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - a missing/odd processor config must not block loading
        log.warning("no usable image processor config for %s (%s); using CLIP defaults", source, _first_line(exc))
        return default_size, CLIP_MEAN, CLIP_STD
    mean = tuple(float(v) for v in (getattr(proc, "image_mean", None) or CLIP_MEAN))
    std = tuple(float(v) for v in (getattr(proc, "image_std", None) or CLIP_STD))
    crop = _size_of(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    size = crop or _size_of(getattr(proc, "size", None)) or default_size
    return size, mean, std


def _size_of(size: object) -> int | None:
    """Square side from an image-processor size (int, dict or SizeDict); None if it only fixes the short edge."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    h, w = get("height"), get("width")
    if h and w:
        return _square((int(h), int(w)), "processor size", "image processor")
    short = get("shortest_edge")
    return int(short) if short else None


def _locate(spec: str) -> tuple[str, bool]:
    """(source, is_local): existing folders are local; anything that cannot be a repo id is a missing folder."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"teacher {spec!r} is a file; pass the checkpoint folder (config.json, weights, tokenizer) "
                f"of a supported model type ({_TYPES})"
            )
        return str(path), True
    if not _could_be_repo_id(spec):
        raise UserError(
            f"teacher folder {spec!r} does not exist; pass an existing checkpoint folder or a hub id "
            f"(e.g. BAAI/AltCLIP) of a supported model type ({_TYPES})"
        )
    return spec, False


def _could_be_repo_id(spec: str) -> bool:
    if spec.startswith((".", "~", "/")) or "\\" in spec or spec.count("/") > 1:
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def _offline_forced() -> bool:
    """HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE, re-read now: huggingface_hub only reads them at import."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return hub_constants.is_offline_mode() or any(
        (f or "").strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def _hub_reachable(timeout: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """Cheap TCP probe of the hub endpoint, so an offline machine fails in seconds, not after minutes of retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe proves nothing; let the hub client try
    url = urlparse(hub_constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores timeouts; the join does not
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _load_error(spec: str, local: bool, offline: bool, exc: BaseException) -> UserError:
    cause = _first_line(exc)
    if local:
        return UserError(
            f"could not load teacher from folder {spec!r} ({cause}); expected a Hugging Face checkpoint folder "
            f"(config.json, weights, tokenizer) of a supported model type: {_TYPES}"
        )
    if not offline and _caused_by(exc, (RepositoryNotFoundError, GatedRepoError)):
        return UserError(
            f"teacher {spec!r} was not found on the Hugging Face hub or is gated ({cause}); pass the hub id or "
            f"local checkpoint folder of a supported model type ({_TYPES})"
        )
    return UserError(
        f"could not download teacher {spec!r} from the Hugging Face hub (no network, or not cached) and no local "
        f"folder has that name; download it elsewhere with `hf download {spec} --local-dir DIR` (older "
        f"huggingface_hub: `huggingface-cli download`), copy DIR here and pass that local folder instead [{cause}]"
    )


def _caused_by(exc: BaseException | None, types: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
