"""Students by name, the timm way: one registry maps a short name to the architecture that builds it.

Teachers of the reference kind are built from the same registry (just bigger entries), so one code path trains,
saves and loads every dual encoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compress.errors import UserError, did_you_mean
from students.image import ImageTower
from students.text import TextTower


@dataclass(frozen=True)
class ImageArch:
    timm_name: str
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    map_indices: tuple[int, ...] = (-3, -2, -1)
    family: str = ""


@dataclass(frozen=True)
class TextArch:
    width: int
    layers: int
    heads: int
    mlp_ratio: float = 4.0


IMAGE_ARCHS: dict[str, ImageArch] = {}
TEXT_ARCHS: dict[str, TextArch] = {}


def register_image_arch(name: str, arch: ImageArch) -> None:
    IMAGE_ARCHS[name] = arch


def register_text_arch(name: str, arch: TextArch) -> None:
    TEXT_ARCHS[name] = arch


# Image students (phone-sized) and reference-teacher towers.
register_image_arch("mobilevit_xxs", ImageArch("mobilevit_xxs", family="mobilevit"))
register_image_arch("mobilevit_xs", ImageArch("mobilevit_xs", family="mobilevit"))
register_image_arch(
    "vit_pico_p8",
    ImageArch("vit_tiny_patch16_224", dict(patch_size=8, embed_dim=128, depth=6, num_heads=2), family="vit"),
)
register_image_arch(
    "vit_tiny_p8",
    ImageArch("vit_tiny_patch16_224", dict(patch_size=8), family="vit"),
)
register_image_arch("fastvit_t8", ImageArch("fastvit_t8", family="fastvit"))
register_image_arch("resnet18", ImageArch("resnet18", family="resnet"))
register_image_arch("resnet34", ImageArch("resnet34", family="resnet"))

# Text towers: small bilingual students and the reference teacher's tower.
register_text_arch("text_pico", TextArch(width=96, layers=2, heads=2))
register_text_arch("text_tiny", TextArch(width=128, layers=2, heads=2))
register_text_arch("text_small", TextArch(width=256, layers=2, heads=4))
register_text_arch("text_base", TextArch(width=384, layers=4, heads=6))


def _unknown(kind: str, key: str, name: str, known: dict) -> UserError:
    return UserError(f"{key}: {name!r} is not a known {kind}; {did_you_mean(name, known)}")


def check_image_arch(name: str, key: str = "arch") -> ImageArch:
    if name not in IMAGE_ARCHS:
        raise _unknown("student", key, name, IMAGE_ARCHS)
    return IMAGE_ARCHS[name]


def check_text_arch(name: str, key: str = "arch") -> TextArch:
    if name not in TEXT_ARCHS:
        raise _unknown("text student", key, name, TEXT_ARCHS)
    return TEXT_ARCHS[name]


def create_image_tower(name: str, embed_dim: int, image_size: int, spec: dict | None = None) -> ImageTower:
    """A registered student by `name`, or any searched architecture from its `spec` (students/spaces.py)."""
    if spec is not None:
        from students.spaces import build_image_backbone

        return ImageTower(spec["family"], embed_dim, image_size, backbone=build_image_backbone(spec, image_size))
    arch = check_image_arch(name)
    return ImageTower(arch.timm_name, embed_dim, image_size, arch.map_indices, arch.timm_kwargs)


def create_text_tower(name: str, vocab_size: int, embed_dim: int, context_length: int, spec: dict | None = None) -> TextTower:
    if spec is not None:
        from students.spaces import check_text_spec

        s = check_text_spec(spec)
        return TextTower(vocab_size, embed_dim, context_length, s["width"], s["layers"], s["heads"], float(s["mlp_ratio"]))
    arch = check_text_arch(name)
    return TextTower(vocab_size, embed_dim, context_length, arch.width, arch.layers, arch.heads, arch.mlp_ratio)
