"""HFTeacher against tiny real AltCLIP / Chinese-CLIP / CLIP checkpoints saved to disk (no mocks, no network).

Two kinds of fixtures: the 32 px, patch 8 ones (`make_tiny_altclip` & co., fast numerics) and stand-ins for every
real hub checkpoint (`make_tiny_like`), which keep the real class, patch size, input size (so the patch grid),
depths, position tables, special tokens, tokenizer type, pooling and image processor, and divide the widths by 64.
Shapes checked (from each checkpoint's config.json / preprocessor_config.json; * = widths/depths from memory, not
re-read from the hub for this table; the structural values are the same as BAAI/AltCLIP's):

| hub id                                       | class        | vision (width x blocks) | patch | input | grid  | text (width x blocks, positions) | proj | processor                    |
|----------------------------------------------|--------------|-------------------------|-------|-------|-------|----------------------------------|------|------------------------------|
| BAAI/AltCLIP                                 | AltCLIPModel | 1024 x 24               | 14    | 224   | 16x16 | XLM-R 1024 x 24, 514 (CLS->768)  | 768  | short edge 224 + crop 224    |
| BAAI/AltCLIP-m9 *                            | AltCLIPModel | 1024 x 24               | 14    | 224   | 16x16 | XLM-R 1024 x 24, 514 (CLS->768)  | 768  | short edge 224 + crop 224    |
| BAAI/AltCLIP-m18 * (proj 1024 seen)          | AltCLIPModel | 1280 x 32               | 14    | 224   | 16x16 | XLM-R 1024 x 24, 514 (CLS->1024) | 1024 | short edge 224 + crop 224    |
| OFA-Sys/chinese-clip-vit-base-patch16        | ChineseCLIP  | 768 x 12                | 16    | 224   | 14x14 | RoBERTa-wwm 768 x 12, 512        | 512  | resize 224x224, no crop      |
| OFA-Sys/chinese-clip-vit-large-patch14       | ChineseCLIP  | 1024 x 24               | 14    | 224   | 16x16 | RoBERTa-wwm 768 x 12, 512        | 768  | resize 224x224, no crop      |
| OFA-Sys/chinese-clip-vit-large-patch14-336px | ChineseCLIP  | 1024 x 24               | 14    | 336   | 24x24 | RoBERTa-wwm 768 x 12, 512        | 768  | resize 336x336, no crop      |
| OFA-Sys/chinese-clip-vit-huge-patch14        | ChineseCLIP  | 1280 x 32               | 14    | 224   | 16x16 | RoBERTa-wwm-large 1024 x 24, 512 | 1024 | resize 224x224, no crop      |
| openai/clip-vit-base-patch32                 | CLIPModel    | 768 x 12                | 32    | 224   | 7x7   | BPE 512 x 12, 77 (EOS pooling)   | 512  | short edge 224 + crop 224    |
| openai/clip-vit-base-patch16                 | CLIPModel    | 768 x 12                | 16    | 224   | 14x14 | BPE 512 x 12, 77                 | 512  | short edge 224 + crop 224    |
| openai/clip-vit-large-patch14                | CLIPModel    | 1024 x 24               | 14    | 224   | 16x16 | BPE 768 x 12, 77                 | 768  | short edge 224 + crop 224    |
| openai/clip-vit-large-patch14-336            | CLIPModel    | 1024 x 24               | 14    | 336   | 24x24 | BPE 768 x 12, 77                 | 768  | short edge 336 + crop 336    |

Every processor: OpenAI CLIP mean (0.4815, 0.4578, 0.4082) / std (0.2686, 0.2613, 0.2758), bicubic.
Text context used: 77 (AltCLIP, CLIP), 52 (Chinese-CLIP), the lengths each family was trained with.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AltCLIPModel,
    AutoTokenizer,
    BertConfig,
    ChineseCLIPImageProcessor,
    ChineseCLIPModel,
    CLIPImageProcessor,
    CLIPModel,
    PreTrainedModel,
)

from compress.errors import UserError
try:  # the training loop is moving into compress/train/
    from compress.train.losses import FeatureDistillLoss
except ImportError:  # pragma: no cover
    from compress.losses import FeatureDistillLoss
from compress.recipe import load_recipe
from compress.teachers import hub as hub_module
from compress.teachers.base import Teacher
from compress.teachers.hf import HFTeacher, resolve_device, resolve_dtype, resolve_map_layers, resolve_text_layer
from tests import hf_fixtures as fx

CLASSES = {"altclip": AltCLIPModel, "chinese_clip": ChineseCLIPModel, "clip": CLIPModel}
KINDS: dict[str, tuple[Callable[[Path], Path], type[PreTrainedModel], list[float], list[float]]] = {
    "altclip": (fx.make_tiny_altclip, AltCLIPModel, fx.OPENAI_MEAN, fx.OPENAI_STD),
    "chinese_clip": (fx.make_tiny_chinese_clip, ChineseCLIPModel, fx.OPENAI_MEAN, fx.OPENAI_STD),
    "clip": (fx.make_tiny_clip, CLIPModel, fx.CLIP_MEAN, fx.CLIP_STD),
}
TEXTS = ["a photo of a cat", "一只猫的照片", "two people riding bicycles in the city at night", "河流和山脉"]
GRID = fx.IMAGE_SIZE // fx.PATCH_SIZE
# Default taps for the real depths: three evenly spaced blocks ending with the last.
DEFAULT_TAPS = {12: [3, 7, 11], 24: [7, 15, 23], 32: [9, 20, 31]}


def _photo() -> Image.Image:
    """A real photograph (Grace Hopper, 512x600, shipped with matplotlib): non-square, so crops matter."""
    import matplotlib.cbook

    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def _pixels(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: make(root / kind) for kind, (make, *_rest) in KINDS.items()}


@pytest.fixture(scope="module")
def real_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny stand-in folder per real hub checkpoint, built once (a few seconds for all eleven)."""
    root = tmp_path_factory.mktemp("real")
    return {hub: fx.make_tiny_like(root / hub.replace("/", "--"), s) for hub, s in fx.REAL_CHECKPOINTS.items()}


@pytest.fixture(scope="module", params=list(KINDS))
def loaded(request: pytest.FixtureRequest, folders: dict[str, Path]) -> tuple[str, HFTeacher, PreTrainedModel]:
    """(kind, teacher, an independently loaded reference model of the same folder)."""
    kind = request.param
    folder = folders[kind]
    reference = KINDS[kind][1].from_pretrained(folder).eval()
    return kind, HFTeacher.from_pretrained(str(folder)), reference


def _pooled(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _reference_pixels(pixels: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    x = F.interpolate(pixels, size=(fx.IMAGE_SIZE, fx.IMAGE_SIZE), mode="bicubic", antialias=True).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------ numerics (32 px)
def test_loads_the_real_class_and_metadata(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    kind, teacher, _ = loaded
    assert isinstance(teacher, Teacher)
    assert type(teacher.model) is KINDS[kind][1]
    assert teacher.model_type == kind
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert teacher.embed_dim == fx.PROJ_DIM
    assert teacher.image_size == fx.IMAGE_SIZE
    assert teacher.logit_scale == pytest.approx(torch.tensor(2.6592).exp().item(), rel=1e-4)
    assert teacher.max_text_len == {"altclip": 64, "chinese_clip": 52, "clip": 40}[kind]
    assert teacher.device == torch.device("cpu") and teacher.dtype == torch.float32  # auto on a CPU-only machine


def test_encode_image_matches_get_image_features(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    kind, teacher, reference = loaded
    mean, std = KINDS[kind][2], KINDS[kind][3]
    pixels = torch.rand(3, 3, 45, 45, generator=torch.Generator().manual_seed(1))  # square: a plain resize

    feats = teacher.encode_image(pixels)

    x = _reference_pixels(pixels, mean, std)
    torch.testing.assert_close(teacher.preprocess(pixels), x, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = _pooled(reference.get_image_features(pixel_values=x))
        out = reference.vision_model(pixel_values=x, output_hidden_states=True)
    assert feats.embedding.shape == (3, fx.PROJ_DIM)
    torch.testing.assert_close(feats.embedding, expected, atol=1e-5, rtol=1e-4)

    # default: 3 evenly spaced layers ending with the last, deduplicated for this 2-layer tower
    assert teacher.map_layers == [0, 1]
    assert teacher.map_channels == [fx.HIDDEN, fx.HIDDEN]
    assert [tuple(m.shape) for m in feats.maps] == [(3, fx.HIDDEN, GRID, GRID)] * 2
    for layer, fmap in zip(teacher.map_layers, feats.maps):
        patches = out.hidden_states[layer + 1][:, 1:].reshape(3, GRID, GRID, fx.HIDDEN).permute(0, 3, 1, 2)
        torch.testing.assert_close(fmap, patches, atol=1e-5, rtol=1e-4)
    # the last tap is the tower's final token grid, row-major: map[:, :, r, c] is patch r * GRID + c
    last = out.last_hidden_state[:, 1:]
    torch.testing.assert_close(feats.maps[-1][:, :, 1, 0], last[:, GRID], atol=1e-5, rtol=1e-4)


def test_encode_text_matches_get_text_features(loaded: tuple[str, HFTeacher, PreTrainedModel], folders) -> None:
    kind, teacher, reference = loaded
    feats = teacher.encode_text(TEXTS)

    tokenizer = AutoTokenizer.from_pretrained(folders[kind])
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=teacher.max_text_len, return_tensors="pt")
    if kind == "clip":
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        expected = _pooled(reference.get_text_features(**batch))
        projected_hidden = reference.text_projection(feats.hidden)
    assert feats.embedding.shape == (len(TEXTS), fx.PROJ_DIM)
    torch.testing.assert_close(feats.embedding, expected, atol=1e-5, rtol=1e-4)
    # `hidden` is exactly what the projection consumes
    torch.testing.assert_close(projected_hidden, feats.embedding, atol=1e-5, rtol=1e-4)
    assert feats.hidden.shape[0] == len(TEXTS)

    # every pair of different strings gives a different embedding
    e = feats.embedding
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert not torch.allclose(e[i], e[j], atol=1e-4)


def test_text_padding_and_truncation(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    _, teacher, _ = loaded
    alone = teacher.encode_text(["a photo of a cat"]).embedding
    batched = teacher.encode_text(["a photo of a cat", TEXTS[2] * 3]).embedding
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)  # padding is masked out
    long = teacher.encode_text([" ".join(fx.CORPUS) * 4])  # longer than every position table
    assert long.embedding.shape == (1, fx.PROJ_DIM)


def test_num_params_counts_towers_and_projections(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    _, teacher, reference = loaded
    towers = (reference.vision_model, reference.text_model, reference.visual_projection, reference.text_projection)
    assert teacher.num_params() == sum(p.numel() for t in towers for p in t.parameters())
    assert teacher.num_params() == reference.num_parameters() - 1  # everything but the logit scale


def test_outputs_are_usable_in_a_student_loss(folders: dict[str, Path]) -> None:
    """inference_mode tensors cannot be saved for backward; the teacher must hand out plain tensors."""
    teacher = HFTeacher.from_pretrained(str(folders["altclip"]))
    image = teacher.encode_image(torch.rand(2, 3, 20, 20))
    text = teacher.encode_text(["a photo of a dog", "一只狗"])
    student = torch.nn.Linear(fx.PROJ_DIM, fx.PROJ_DIM)
    loss = F.mse_loss(student(image.embedding), text.embedding) + F.cosine_similarity(
        student(text.embedding), image.embedding
    ).mean() + image.maps[0].mul(student.weight.sum()).mean()
    loss.backward()
    assert student.weight.grad is not None


# ------------------------------------------------------------------------------------------ feature taps
def test_map_layers_default_negative_order_and_errors() -> None:
    for depth, taps in DEFAULT_TAPS.items():
        assert resolve_map_layers(None, depth) == taps
    assert resolve_map_layers(None, 1) == [0] and resolve_map_layers(None, 2) == [0, 1]
    assert resolve_map_layers([-1], 24) == [23]
    assert resolve_map_layers([-17, -9, -1], 24) == [7, 15, 23]  # same blocks as the recipe's [7, 15, 23]
    assert resolve_map_layers([23, 0, 11], 24) == [0, 11, 23]  # always shallow to deep
    assert resolve_map_layers([-24], 24) == [0]
    assert resolve_map_layers([], 24) == []
    for bad in (24, -25, 100):
        with pytest.raises(UserError, match=rf"teacher.map_layers: {bad} is out of range for a 24-block") as err:
            resolve_map_layers([bad], 24)
        assert "0..23" in str(err.value) and "-24..-1" in str(err.value)
    with pytest.raises(UserError, match="-1 and 23 are the same block"):
        resolve_map_layers([-1, 23], 24)
    with pytest.raises(UserError, match="not a block index"):
        resolve_map_layers([True], 24)


def test_explicit_map_layers_on_the_model(folders: dict[str, Path]) -> None:
    teacher = HFTeacher.from_pretrained(str(folders["clip"]), map_layers=[-1])
    assert teacher.map_layers == [fx.LAYERS - 1]
    feats = teacher.encode_image(torch.rand(1, 3, fx.IMAGE_SIZE, fx.IMAGE_SIZE))
    assert len(feats.maps) == 1 == len(teacher.map_channels)
    with pytest.raises(UserError, match="out of range"):
        HFTeacher.from_pretrained(str(folders["clip"]), map_layers=[fx.LAYERS])
    none = HFTeacher.from_pretrained(str(folders["clip"]), map_layers=[])
    assert none.encode_image(torch.rand(1, 3, 16, 16)).maps == [] and none.map_channels == []


def test_text_layer_taps_the_pooled_token_of_a_block(loaded: tuple[str, HFTeacher, PreTrainedModel], folders) -> None:
    """text_layer=-1 is the last block at the pooling token: the default hidden before each family's head."""
    kind, default, reference = loaded
    teacher = HFTeacher.from_pretrained(str(folders[kind]), text_layer=-1)
    assert teacher.text_layer == fx.LAYERS - 1 and default.text_layer is None
    tapped, base = teacher.encode_text(TEXTS), default.encode_text(TEXTS)
    torch.testing.assert_close(tapped.embedding, base.embedding)  # the embedding does not depend on the tap
    assert tapped.hidden.shape == (len(TEXTS), fx.HIDDEN)
    with torch.no_grad():
        if kind == "chinese_clip":  # CLS of the last block is fed to the projection as is
            head = tapped.hidden
        elif kind == "clip":  # EOS token, then final_layer_norm
            head = reference.text_model.final_layer_norm(tapped.hidden)
        else:  # AltCLIP: CLS, then pre_LN and the transformation to project_dim
            head = reference.text_model.transformation(reference.text_model.pre_LN(tapped.hidden))
    torch.testing.assert_close(head, base.hidden, atol=1e-5, rtol=1e-4)

    first = HFTeacher.from_pretrained(str(folders[kind]), text_layer=0).encode_text(TEXTS).hidden
    assert not torch.allclose(first, tapped.hidden, atol=1e-3)
    for bad in (fx.LAYERS, -fx.LAYERS - 1):
        with pytest.raises(UserError, match=rf"teacher.text_layer: {bad} is out of range for a {fx.LAYERS}-block"):
            HFTeacher.from_pretrained(str(folders[kind]), text_layer=bad)


def test_resolve_text_layer() -> None:
    assert resolve_text_layer(None, 24) is None
    assert resolve_text_layer(-1, 24) == 23 and resolve_text_layer(0, 12) == 0
    with pytest.raises(UserError, match="out of range"):
        resolve_text_layer(12, 12)


# ------------------------------------------------------------------------------------------ real checkpoint shapes
@pytest.mark.parametrize("hub_id", list(fx.REAL_CHECKPOINTS))
def test_real_checkpoint_shapes(hub_id: str, real_like: dict[str, Path]) -> None:
    """Same class, input size, grid, taps and text length as the real checkpoint; maps feed the stage-1 loss."""
    shape = fx.REAL_CHECKPOINTS[hub_id]
    teacher = HFTeacher.from_pretrained(str(real_like[hub_id]))
    assert type(teacher.model) is CLASSES[shape.family] and teacher.model_type == shape.family
    assert (teacher.image_size, teacher.patch_size, teacher.grid) == (shape.image_size, shape.patch, shape.grid)
    assert not teacher._interpolate_pos  # processor size == position table size for every real checkpoint
    assert teacher.preprocessing.resize_shortest == (shape.image_size if shape.processor == "clip" else None)
    assert teacher.max_text_len == shape.trained_text_len
    assert teacher.embed_dim == fx.tiny_width(shape.projection_dim)
    assert teacher.map_layers == DEFAULT_TAPS[shape.vision_layers]
    assert teacher.map_channels == [fx.tiny_width(shape.vision_width)] * 3

    student_pixels = torch.rand(2, 3, 256, 256)  # e.g. a 256 px student batch: the teacher resizes it itself
    feats = teacher.encode_image(student_pixels)
    assert [tuple(m.shape) for m in feats.maps] == [(2, fx.tiny_width(shape.vision_width), shape.grid, shape.grid)] * 3
    with torch.no_grad():
        expected = _pooled(teacher.model.get_image_features(pixel_values=teacher.preprocess(student_pixels)))
    torch.testing.assert_close(feats.embedding, expected, atol=1e-5, rtol=1e-4)
    # a MobileViT-like 28x28 student map is resized onto the teacher grid by the stage-1 loss
    loss = FeatureDistillLoss()(torch.randn(2, feats.maps[0].shape[1], 28, 28, requires_grad=True), feats.maps[0])
    assert torch.isfinite(loss)

    text = teacher.encode_text(["a photo of a cat", "一只猫的照片"])
    hidden = shape.project_dim if shape.family == "altclip" else shape.text_width
    assert text.embedding.shape == (2, fx.tiny_width(shape.projection_dim))
    assert text.hidden.shape == (2, fx.tiny_width(hidden))
    # the tap on the last text block: full text width, at every real text depth
    last = HFTeacher.from_pretrained(str(real_like[hub_id]), map_layers=[], text_layer=-1)
    assert last.text_layer == shape.text_layers - 1
    assert last.encode_text(["a photo of a cat"]).hidden.shape == (1, fx.tiny_width(shape.text_width))


PARITY = [
    "BAAI/AltCLIP",  # shortest edge 224 + centre crop
    "OFA-Sys/chinese-clip-vit-base-patch16",  # plain 224x224 resize, no crop
    "OFA-Sys/chinese-clip-vit-large-patch14-336px",  # plain 336x336 resize
    "openai/clip-vit-large-patch14-336",  # shortest edge 336 + centre crop
]


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
@pytest.mark.parametrize("hub_id", PARITY)
def test_preprocessing_matches_the_checkpoint_processor(hub_id: str, backend: str, real_like) -> None:
    """Our float-tensor replay of the checkpoint's own image processor, against that processor on a real photo."""
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    shape = fx.REAL_CHECKPOINTS[hub_id]
    folder = real_like[hub_id]
    processors = {
        "clip": {"torchvision": CLIPImageProcessor, "pil": CLIPImageProcessorPil},
        "chinese_clip": {"torchvision": ChineseCLIPImageProcessor, "pil": ChineseCLIPImageProcessorPil},
    }
    processor = processors[shape.processor][backend].from_pretrained(folder)
    teacher = HFTeacher.from_pretrained(str(folder), map_layers=[])
    photo = _photo()

    reference = processor(images=photo, return_tensors="pt")["pixel_values"]
    ours = teacher.preprocess(_pixels(photo))
    assert ours.shape == reference.shape == (1, 3, shape.image_size, shape.image_size)
    diff = (ours - reference).abs()  # normalised units (1/255 of a pixel is ~0.015)
    assert diff.mean() < 0.01 and diff.flatten().quantile(0.99) < 0.03 and diff.max() < 0.15, diff.max()
    with torch.no_grad():
        expected = _pooled(teacher.model.get_image_features(pixel_values=reference))
    cos = F.cosine_similarity(teacher.encode_image(_pixels(photo)).embedding, expected)
    assert cos.min() > 0.999

    # the test can fail: squashing the whole 512x600 photo (no crop) is far off for the cropping processors, and
    # cropping is far off for Chinese-CLIP's plain resize
    x = _pixels(photo)
    if shape.processor == "clip":
        other = F.interpolate(x, size=(shape.image_size,) * 2, mode="bicubic", antialias=True).clamp(0, 1)
    else:
        s = shape.image_size
        other = F.interpolate(x, size=(int(s * 600 / 512), s), mode="bicubic", antialias=True).clamp(0, 1)
        top = (other.shape[-2] - s) // 2
        other = other[..., top : top + s, :]
    other = (other - teacher._mean) / teacher._std
    assert (other - reference).abs().mean() > 5 * diff.mean()


def test_square_batches_skip_the_crop_and_non_square_crop_like_clip(real_like: dict[str, Path]) -> None:
    """A CLIP teacher on a 300x200 (W x H) image: short edge to 224 -> 336x224, centre crop 224 (columns 56..280)."""
    teacher = HFTeacher.from_pretrained(str(real_like["openai/clip-vit-base-patch16"]), map_layers=[])
    x = torch.rand(1, 3, 200, 300)
    resized = F.interpolate(x, size=(224, 336), mode="bicubic", antialias=True).clamp(0, 1)[..., 56:280]
    expected = (resized - teacher._mean) / teacher._std
    torch.testing.assert_close(teacher.preprocess(x), expected, atol=1e-5, rtol=1e-5)
    square = torch.rand(2, 3, 224, 224)
    torch.testing.assert_close(teacher.preprocess(square), (square - teacher._mean) / teacher._std)


# ------------------------------------------------------------------------------------------ dtype and device
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_teacher_returns_fp32_features(dtype: str, folders: dict[str, Path]) -> None:
    full = HFTeacher.from_pretrained(str(folders["altclip"]), device="cpu")
    half = HFTeacher.from_pretrained(str(folders["altclip"]), device="cpu", dtype=dtype)
    assert half.dtype == resolve_dtype(dtype) and all(p.dtype == half.dtype for p in half.model.parameters())
    pixels = torch.rand(2, 3, 40, 40)
    a, b = full.encode_image(pixels), half.encode_image(pixels)
    ta, tb = full.encode_text(TEXTS), half.encode_text(TEXTS)
    for t in (b.embedding, *b.maps, tb.embedding, tb.hidden):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert F.cosine_similarity(a.embedding, b.embedding).min() > 0.99
    assert F.cosine_similarity(ta.embedding, tb.embedding).min() > 0.99


def test_dtype_and_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dtype("fp32") is torch.float32 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(UserError, match="teacher.dtype 'fp8' is not supported; use one of: fp32, fp16, bf16"):
        resolve_dtype("fp8")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UserError, match="no CUDA device is visible"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="teacher.device 'tpu' is not supported"):
        resolve_device("tpu")
    # under a multi-process launcher every process puts its teacher on its own GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 1) == resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_teacher_returns_features_on_its_device(folders: dict[str, Path]) -> None:
    teacher = HFTeacher.from_pretrained(str(folders["chinese_clip"]), device="cuda", dtype="bf16")
    feats, text = teacher.encode_image(torch.rand(2, 3, 32, 32)), teacher.encode_text(TEXTS)
    for t in (feats.embedding, *feats.maps, text.embedding, text.hidden):
        assert t.device.type == "cuda" and t.dtype == torch.float32


# ------------------------------------------------------------------------------------------ recipe
def test_altclip_recipe_validates_and_fits_altclip() -> None:
    recipe = load_recipe("recipes/altclip_mobilevit_int8.yaml")
    t = recipe.teacher
    assert (t.kind, t.spec, t.dtype, t.device, t.text_layer) == ("hf", "BAAI/AltCLIP", "bf16", "auto", None)
    assert resolve_map_layers(t.map_layers, 24) == DEFAULT_TAPS[24]  # AltCLIP's 24 ViT-L/14 blocks
    assert recipe.data.kind == "manifest" and recipe.data.manifest == "data/pairs/train.jsonl"
    assert recipe.data.image_size >= 224
    local = load_recipe("recipes/altclip_mobilevit_int8.yaml", ["teacher.spec=models/AltCLIP", "teacher.text_layer=-2"])
    assert local.teacher.spec == "models/AltCLIP" and local.teacher.text_layer == -2
    for override, message in [
        ("teacher.dtype=fp8", "teacher.dtype: 'fp8' is not allowed"),
        ("teacher.device=tpu", "teacher.device: 'tpu' is not allowed"),
        ("teacher.map_layers=[1.5]", "teacher.map_layers.0"),
        ("teacher.text_layer=true", "teacher.text_layer"),
    ]:
        with pytest.raises(UserError, match=message):
            load_recipe("recipes/altclip_mobilevit_int8.yaml", [override])


def test_from_config_passes_every_teacher_setting(tmp_path: Path) -> None:
    folder = fx.make_tiny_like(tmp_path / "altclip", fx.REAL_CHECKPOINTS["BAAI/AltCLIP"])
    recipe = load_recipe(
        "recipes/altclip_mobilevit_int8.yaml",
        [f"teacher.spec={folder}", "teacher.text_layer=-2", "teacher.device=cpu", "teacher.dtype=fp32"],
    )
    teacher = HFTeacher.from_config(recipe.teacher)
    assert teacher.map_layers == [7, 15, 23] and teacher.text_layer == 22
    assert teacher.device == torch.device("cpu") and teacher.dtype == torch.float32
    assert [tuple(m.shape[1:]) for m in teacher.encode_image(torch.rand(1, 3, 224, 224)).maps] == [(16, 16, 16)] * 3


# ------------------------------------------------------------------------------------------ load errors
def test_offline_hub_id_is_a_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        HFTeacher.from_pretrained("BAAI/AltCLIP")
    assert time.perf_counter() - start < 10
    msg = str(err.value)
    assert "\n" not in msg
    assert "BAAI/AltCLIP" in msg and "could not download" in msg
    assert "local folder" in msg and "hf download BAAI/AltCLIP --local-dir DIR" in msg


def test_unreachable_hub_fails_fast_without_offline_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HF_HUB_OFFLINE, no network: the TCP probe notices in seconds instead of the hub client's retry loop."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub_module.hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module.hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert not hub_module.offline_forced() and not hub_module.hub_reachable()
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        HFTeacher.from_pretrained("OFA-Sys/chinese-clip-vit-base-patch16")
    assert time.perf_counter() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "hf download OFA-Sys/chinese-clip-vit-base-patch16 --local-dir DIR" in msg


@pytest.mark.parametrize("spec", ["missing", "./no/such/teacher", "/no/such/teacher"])
def test_missing_folder_is_a_user_error(tmp_path: Path, spec: str) -> None:
    path = str(tmp_path / spec) if spec == "missing" else spec
    with pytest.raises(UserError, match="does not exist") as err:
        HFTeacher.from_pretrained(path)
    assert "\n" not in str(err.value) and "chinese_clip" in str(err.value)


def test_unsupported_or_broken_folder_is_a_user_error(tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
    with pytest.raises(UserError, match="'bert' model.*altclip, chinese_clip, clip"):
        HFTeacher.from_pretrained(str(bert))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="could not load teacher from folder.*altclip") as err:
        HFTeacher.from_pretrained(str(empty))
    assert "\n" not in str(err.value)


def test_a_checkpoint_whose_image_processor_does_not_load_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    """issue 17: no silent fallback to CLIP's preprocessing: the teacher's resize, crop and mean/std are its own."""
    import shutil

    broken = tmp_path / "no-processor"
    shutil.copytree(folders["altclip"], broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match="preprocessor_config.json") as err:
        HFTeacher.from_pretrained(str(broken))
    assert "\n" not in str(err.value) and "image processor" in str(err.value)
