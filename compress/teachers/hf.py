"""Hugging Face CLIP-family teachers (AltCLIP, Chinese-CLIP, CLIP) behind the `Teacher` protocol.

Loaded the way a user would (`from_pretrained` on a hub id or a local folder), so the teacher a recipe names is
exactly the checkpoint that gets distilled. Preprocessing is redone here with torch ops on [0, 1] pixels, because
the student's data pipeline already produced tensors and teacher/student preprocessing may differ; the geometry
(resize, centre crop), resampling filter and normalisation come from the checkpoint's own image processor config.
Finding the checkpoint (folder or hub id, offline or not) and turning load failures into one line is `hub.py`.
"""
from __future__ import annotations

import logging
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
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
from compress.teachers.base import ImageFeatures, TextFeatures, resolve_blocks, resolve_text_layers
from compress.teachers.hub import MODEL_TYPES, TYPES_TEXT, first_line, hub_reachable, load_error, locate, offline_forced

log = logging.getLogger(__name__)

# hub.MODEL_TYPES names the supported types (its messages list them); here each gets its transformers class.
SUPPORTED_MODEL_TYPES: dict[str, type[PreTrainedModel]] = dict(
    zip(MODEL_TYPES, (AltCLIPModel, ChineseCLIPModel, CLIPModel), strict=True)
)
_TYPES = TYPES_TEXT
# Context length each family was trained with; the text towers accept more positions but were never trained on them.
_TRAINED_TEXT_LEN = {"altclip": 77, "chinese_clip": 52, "clip": 77}
# OpenAI CLIP preprocessing, used when a checkpoint ships no image processor config (AltCLIP/Chinese-CLIP use it too).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda")
# PIL resampling codes of image processor configs -> torch interpolation modes (antialiased, like PIL).
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
_PIL_RESAMPLE = {mode: code for code, mode in _RESAMPLE.items()}


@dataclass(frozen=True)
class ImagePreprocessing:
    """What the checkpoint's image processor does to an image, replayed on [0, 1] float tensors.

    `resize_shortest` set: scale so the short edge has that length (keeping the aspect ratio, long edge truncated
    like transformers does), then centre-crop `size` x `size` (CLIP, AltCLIP). Unset: resize straight to
    `size` x `size` (Chinese-CLIP's `{height, width}` processors, which do not crop)."""

    size: int
    resize_shortest: int | None = None
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    mode: str = "bicubic"


class HFTeacher:
    """A frozen CLIP-family model that maps [0, 1] pixels and raw strings to teacher features."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: object,
        *,
        name: str,
        image_size: int | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        preprocessing: ImagePreprocessing | None = None,
        map_layers: Sequence[int] | None = None,
        text_layer: int | None = None,
        max_text_len: int | None = None,
        text_layers: Sequence[int] | None = None,
    ) -> None:
        model_type = model.config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(f"teacher {name!r} is a {model_type!r} model; supported teacher model types: {_TYPES}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.model_type = model_type
        self.embed_dim = int(model.config.projection_dim)
        vision, text = model.config.vision_config, model.config.text_config
        native = _square(vision.image_size, "image size", name)
        if preprocessing is None:
            preprocessing = ImagePreprocessing(int(image_size or native), None, tuple(mean), tuple(std))
        self.preprocessing = preprocessing
        self.image_size = preprocessing.size
        self.patch_size = _square(vision.patch_size, "patch size", name)
        if self.image_size % self.patch_size:
            raise UserError(
                f"teacher {name!r}: input size {self.image_size} is not a multiple of its patch size {self.patch_size}"
            )
        self.grid = self.image_size // self.patch_size
        # Checkpoints whose processor size differs from the position table get interpolated positions.
        self._interpolate_pos = self.image_size != native
        self.map_layers = resolve_map_layers(map_layers, int(vision.num_hidden_layers))
        self.map_channels = [int(vision.hidden_size)] * len(self.map_layers)
        self.text_layer = resolve_text_layer(text_layer, int(text.num_hidden_layers))
        if text_layer is not None and text_layers is not None:
            raise UserError("teacher.text_layers: set either text_layer (one text-hidden target) or text_layers, not both")
        self.text_layers = resolve_text_layers(text_layers, int(text.num_hidden_layers))
        self.max_text_len = max_text_len or _default_text_len(model_type, text, tokenizer)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocessing.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        # CLIP's get_text_features takes no token_type_ids; BERT/RoBERTa towers do.
        self._text_inputs = {"input_ids", "attention_mask"} | (
            {"token_type_ids"} if model_type != "clip" else set()
        )

    @classmethod
    def from_pretrained(
        cls,
        spec: str,
        map_layers: Sequence[int] | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "fp32",
        max_text_len: int | None = None,
        text_layer: int | None = None,
        text_layers: Sequence[int] | None = None,
    ) -> HFTeacher:
        """Load a hub id (e.g. `BAAI/AltCLIP`) or a local checkpoint folder; failures become one-line UserErrors.

        `device`: `auto` (the process's CUDA device if there is one, else CPU), `cpu`, `cuda` or a torch device.
        `dtype`: `fp32`, `fp16`, `bf16` or a torch dtype; the weights are loaded in it, features come back fp32."""
        torch_dtype = resolve_dtype(dtype)
        torch_device = resolve_device(device)
        source, local = locate(spec)
        # Offline (forced or detected) means cache-only: never sit through the hub client's retry/backoff loop.
        offline = local or offline_forced() or not hub_reachable()
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=offline)
            model_type = getattr(config, "model_type", None)
            if model_type not in SUPPORTED_MODEL_TYPES:
                raise UserError(
                    f"teacher {spec!r} is a {model_type!r} model, not a supported CLIP-family model; "
                    f"supported teacher model types: {_TYPES}"
                )
            model = SUPPORTED_MODEL_TYPES[model_type].from_pretrained(
                source, dtype=torch_dtype, local_files_only=offline
            )
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - every load failure must reach the user as one line
            raise load_error(spec, local, offline, exc) from exc
        preprocessing = _image_preprocessing(source, offline, config)
        return cls(
            model.to(torch_device),
            tokenizer,
            name=spec,
            preprocessing=preprocessing,
            map_layers=map_layers,
            text_layer=text_layer,
            max_text_len=max_text_len,
            text_layers=text_layers,
        )

    @classmethod
    def from_config(cls, cfg: object) -> HFTeacher:
        """From a recipe's `teacher` section (`TeacherConfig` with kind=hf): spec, map_layers, text_layer or
        text_layers, dtype, device."""
        return cls.from_pretrained(
            cfg.spec,
            map_layers=getattr(cfg, "map_layers", None),
            device=getattr(cfg, "device", "auto"),
            dtype=getattr(cfg, "dtype", "fp32"),
            text_layer=getattr(cfg, "text_layer", None),
            text_layers=getattr(cfg, "text_layers", None),
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
        """Projected image embedding (as `get_image_features`) plus patch-token maps of `map_layers`, NCHW.

        Outputs are fp32 on the teacher's device, whatever its dtype."""
        blocks = self.model.vision_model.encoder.layers
        with _capture_outputs([blocks[i] for i in self.map_layers]) as tapped, torch.inference_mode():
            x = self.preprocess(pixels).to(self.dtype)
            # get_image_features is vision_model -> pooler_output -> visual_projection in every transformers
            # version; calling the tower ourselves lets hooks keep the tapped blocks' outputs (and only those:
            # output_hidden_states would hold every block's, 25 full activations for a ViT-L).
            out = self.model.vision_model(
                pixel_values=x, interpolate_pos_encoding=self._interpolate_pos, return_dict=True
            )
            embedding = self.model.visual_projection(out.pooler_output)
            b = x.shape[0]
            maps = [t[:, 1:, :].reshape(b, self.grid, self.grid, -1).permute(0, 3, 1, 2) for t in tapped]
        return ImageFeatures(embedding=_plain(embedding), maps=[_plain(m) for m in maps])

    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        """Projected text embedding (as `get_text_features`) plus a pooled hidden state, or several.

        `hidden` is the pooled state fed to the text projection (default), or with `text_layer` set, the output of
        that transformer block at the family's pooling token (CLS for AltCLIP/Chinese-CLIP, EOS for CLIP). With
        `text_layers` set, `layers` holds those blocks' outputs at the pooling token (shallow to deep) and `hidden`
        is None."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("encode_text needs at least one string")
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._text_inputs}
        taps = self.text_layers
        tap = self.text_layer is not None or taps is not None
        # Each family pools differently (CLS, EOS, projected CLS); the projection's input is the pooled state.
        with _capture_input(self.model.text_projection) as pooled, torch.inference_mode():
            out = self.model.get_text_features(**inputs, **({"output_hidden_states": True} if tap else {}))
            embedding = _features(out)
            if tap:
                pos = self._pool_positions(inputs["input_ids"])
                rows = torch.arange(pos.shape[0])

                def at(layer: int) -> torch.Tensor:
                    states = out.hidden_states[layer + 1]
                    return states[rows.to(states.device), pos.to(states.device)]

            if taps is not None:
                return TextFeatures(embedding=_plain(embedding), hidden=None, layers=[_plain(at(i)) for i in taps])
            hidden = at(self.text_layer) if tap else pooled[0]
        return TextFeatures(embedding=_plain(embedding), hidden=_plain(hidden))

    @property
    def train_input(self) -> tuple[int, int]:
        """(side, PIL resample code) of the image processor's first resize: a training crop resized so is what
        `preprocess` then turns into exactly the processor's output (its centre crop, if any, and normalisation)."""
        p = self.preprocessing
        return p.resize_shortest or p.size, _PIL_RESAMPLE[p.mode]

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (B, 3, H, W) -> the normalised fp32 tensor the vision tower sees (on the teacher's device).

        Replays the checkpoint's image processor: shortest-edge resize + centre crop (CLIP, AltCLIP) or a plain
        resize (Chinese-CLIP), antialiased like PIL, then its mean/std. Square inputs (every training batch) are
        just resized to the teacher's input size."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        p = self.preprocessing
        x = pixels.to(device=self.device, dtype=torch.float32)
        h, w = x.shape[-2:]
        if p.resize_shortest is not None and h != w:
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(p.resize_shortest * long / short)
            target = (p.resize_shortest, new_long) if h <= w else (new_long, p.resize_shortest)
        else:
            target = (p.resize_shortest or p.size,) * 2
        x = self._resize(x, target)
        top, left = (x.shape[-2] - p.size) // 2, (x.shape[-1] - p.size) // 2
        x = x[..., top : top + p.size, left : left + p.size]
        return (x - self._mean) / self._std

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        x = F.interpolate(x, size=size, mode=self.preprocessing.mode, antialias=True, align_corners=False)
        # Clamp: bicubic overshoots, and the reference processors' uint8 resize saturates.
        return x.clamp_(0.0, 1.0)

    def _pool_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index of the token each family pools: CLS (position 0) for BERT/RoBERTa towers, EOS for CLIP."""
        if self.model_type != "clip":
            return torch.zeros(input_ids.shape[0], dtype=torch.long)
        eos = self.model.config.text_config.eos_token_id
        ids = input_ids.to(torch.int)
        if eos == 2:  # legacy CLIP configs (openai/*): EOS is the highest id, as in transformers' CLIPTextTransformer
            return ids.argmax(dim=-1).cpu()
        return (ids == eos).int().argmax(dim=-1).cpu()

    def __repr__(self) -> str:
        return (
            f"HFTeacher({self.name!r}, type={self.model_type}, embed_dim={self.embed_dim}, "
            f"image_size={self.image_size}, grid={self.grid}, map_layers={self.map_layers}, "
            f"text_layer={self.text_layer}, text_layers={self.text_layers}, device={self.device}, dtype={self.dtype})"
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


@contextmanager
def _capture_outputs(modules: Sequence[torch.nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Slots filled with the outputs of `modules` (in the order given) as a forward runs inside the block."""
    slots: list[torch.Tensor | None] = [None] * len(modules)

    def hook(index: int):
        def store(_module: torch.nn.Module, _args: object, out: object) -> None:
            slots[index] = out[0] if isinstance(out, tuple) else out  # 4.x layers return tuples, 5.x tensors

        return store

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield slots
    finally:
        for handle in handles:
            handle.remove()


def _square(value: int | Sequence[int], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    h, w = value
    if h != w:
        raise UserError(f"teacher {name!r} has a non-square {what} {h}x{w}; only square teacher inputs are supported")
    return int(h)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`fp32|fp16|bf16` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise UserError(f"teacher.dtype {dtype} is not supported; use one of: {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"teacher.dtype {dtype!r} is not supported; use one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` -> this process's CUDA device if CUDA is usable, else CPU; `cuda` without a GPU is a UserError.

    The CUDA device is LOCAL_RANK's under a multi-process launcher (torchrun, accelerate), so every process keeps
    its own teacher copy on its own GPU, else the current device."""
    if isinstance(device, torch.device):
        return device
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise UserError(f"teacher.device {device!r} is not supported; use one of: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    if device == "cpu" or (device == "auto" and not cuda):
        return torch.device("cpu")
    if not cuda:
        raise UserError(
            f"teacher.device {device!r} but no CUDA device is visible to torch; use teacher.device=auto or cpu"
        )
    if str(device).startswith("cuda:"):
        return torch.device(device)
    local_rank = os.environ.get("LOCAL_RANK")
    index = int(local_rank) % torch.cuda.device_count() if local_rank else torch.cuda.current_device()
    return torch.device("cuda", index)


def resolve_map_layers(map_layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """Vision blocks whose patch tokens become feature maps, ascending (shallow to deep), 0-based.

    Default: three evenly spaced blocks ending with the last (3, 7, 11 of 12; 7, 15, 23 of 24; 9, 20, 31 of 32).
    Negative indices count from the end (-1 = last block). Out-of-range or repeated blocks are UserErrors; an empty
    list means no maps. Maps are returned shallow to deep because stage 1 pairs the deepest teacher maps with the
    deepest student stages."""
    if map_layers is None:
        return sorted({num_layers * (k + 1) // 3 - 1 for k in range(3)} - {-1})
    return resolve_blocks(map_layers, num_layers, "teacher.map_layers", "vision")


def resolve_text_layer(text_layer: int | None, num_layers: int) -> int | None:
    """0-based text block whose pooled output is the `hidden` target; None = the projection's input (default)."""
    if text_layer is None:
        return None
    integral = isinstance(text_layer, numbers.Integral) and not isinstance(text_layer, bool)
    if not integral or not -num_layers <= int(text_layer) < num_layers:
        raise UserError(
            f"teacher.text_layer: {text_layer!r} is out of range for a {num_layers}-block text tower "
            f"(use 0..{num_layers - 1}, or -{num_layers}..-1 from the end; leave it unset for the projection's input)"
        )
    return int(text_layer) % num_layers


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


def _image_preprocessing(source: str, offline: bool, config: object) -> ImagePreprocessing:
    """The checkpoint's image processor settings; CLIP defaults at the model's own size if it ships none."""
    native = _square(config.vision_config.image_size, "image size", source)
    try:
        proc = AutoImageProcessor.from_pretrained(source, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - any failure: guessing CLIP's defaults would distil the wrong inputs
        raise UserError(f"teacher {source!r}: its image processor (preprocessor_config.json) cannot be loaded "
                        f"({first_line(exc)}); the teacher's resize, crop and normalisation come from it, so add or "
                        "repair that file (AutoImageProcessor.save_pretrained writes one)") from None
    if getattr(proc, "do_normalize", True):
        mean = tuple(float(v) for v in (getattr(proc, "image_mean", None) or CLIP_MEAN))
        std = tuple(float(v) for v in (getattr(proc, "image_std", None) or CLIP_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    resample = getattr(proc, "resample", 3)
    mode = _RESAMPLE.get(int(getattr(resample, "value", resample) if resample is not None else 3), "bicubic")
    size = getattr(proc, "size", None)
    square, shortest = _size_of(size), _shortest_of(size)
    crop = _size_of(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    if not getattr(proc, "do_resize", True):
        log.warning("%s: its image processor does not resize; resizing to the model's %d px anyway", source, native)
        return ImagePreprocessing(crop or native, native if crop else None, mean, std, mode)
    if crop:
        resize = shortest or square or crop
        if resize < crop:
            raise UserError(f"teacher {source!r}: image processor crops {crop} px out of a {resize} px resize")
        if resize > crop:
            log.info("%s: resize to %d px then centre crop %d px; teacher maps cover the crop only", source, resize, crop)
        return ImagePreprocessing(crop, resize, mean, std, mode)
    if square is None and shortest is not None:
        log.warning("%s: shortest-edge resize without a crop; non-square inputs are squashed to %d px", source, shortest)
    return ImagePreprocessing(square or shortest or native, None, mean, std, mode)


def _size_get(size: object, key: str) -> object:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _size_of(size: object) -> int | None:
    """Square side of an image-processor size (int, {height, width} dict or SizeDict); None for shortest-edge sizes."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    h, w = _size_get(size, "height"), _size_get(size, "width")
    if h and w:
        return _square((int(h), int(w)), "processor size", "image processor")
    return None


def _shortest_of(size: object) -> int | None:
    if size is None or isinstance(size, int):
        return None
    short = _size_get(size, "shortest_edge")
    return int(short) if short else None
