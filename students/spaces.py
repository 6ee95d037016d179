"""Search spaces for student towers: small JSON specs, and the timm / text-tower builders that turn them into modules.

A candidate is data, not code: `ImageCandidate` (family, input resolution, architecture settings) and
`TextCandidate` (width, layers, heads, MLP ratio, context length). Their `spec()` is what a checkpoint's model.json
and a recipe's `students.*.spec` store, so `export`, `eval` and `bench` rebuild a searched student without a
registry entry. Every image backbone comes from timm: VisionTransformer kwargs, ByobNet configs built with timm's
own MobileViT / MobileViT-v2 block helpers, and FastViT kwargs. Nothing here is a hand-written backbone.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

IMAGE_FAMILIES = ("vit", "mobilevit", "mobilevitv2", "fastvit", "mobilenetv4")

# Keys each family's spec must carry (and nothing else): a spec from a recipe or a checkpoint is checked against these.
_IMAGE_KEYS: dict[str, tuple[str, ...]] = {
    "vit": ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"),
    "mobilevit": ("stem", "channels", "ir_depth", "transformer_dims", "transformer_depths", "expansion", "num_features"),
    "mobilevitv2": ("multiplier", "ir_depth", "transformer_depths", "expansion"),
    "fastvit": ("layers", "embed_dims", "mlp_ratio", "last_mixer"),
    "mobilenetv4": ("multiplier", "ir_repeats", "expansion", "num_features"),
}
_TEXT_KEYS = ("width", "layers", "heads", "mlp_ratio")


def canonical(obj: Any) -> str:
    """One JSON text per spec (sorted keys, tuples as lists): the latency table's and dedup's key."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _json_ready(d: dict) -> dict:
    return json.loads(json.dumps(d))  # tuples -> lists, so a spec compares equal after a JSON round trip


# ------------------------------------------------------------------------------------------------ specs
@dataclass
class ImageCandidate:
    family: str
    image_size: int
    arch: dict[str, Any] = field(default_factory=dict)

    tower = "image"

    def spec(self) -> dict[str, Any]:
        """What a checkpoint and a recipe store (resolution lives in data.image_size / DualEncoderSpec.image_size)."""
        return _json_ready({"family": self.family, **self.arch})

    def key(self, embed_dim: int) -> str:
        return canonical({"tower": "image", "image_size": self.image_size, "embed_dim": embed_dim, **self.spec()})

    def name(self) -> str:
        a = self.arch
        short = {
            "vit": lambda: f"p{a['patch_size']}_w{a['embed_dim']}_d{a['depth']}_h{a['num_heads']}_m{a['mlp_ratio']:g}",
            "mobilevit": lambda: f"c{a['channels'][-1]}_t{a['transformer_dims'][-1]}_d{sum(a['transformer_depths'])}_e{a['expansion']:g}",
            "mobilevitv2": lambda: f"x{a['multiplier']:g}_d{sum(a['transformer_depths'])}_e{a['expansion']:g}",
            "fastvit": lambda: f"w{a['embed_dims'][0]}_l{sum(a['layers'])}_m{a['mlp_ratio']:g}_{a['last_mixer'][:3]}",
            "mobilenetv4": lambda: f"x{a['multiplier']:g}_d{sum(a['ir_repeats'])}_e{a['expansion']:g}_f{a['num_features']}",
        }[self.family]()
        return f"{self.family}_{short}_r{self.image_size}"

    def as_dict(self) -> dict[str, Any]:
        return {"tower": "image", "family": self.family, "image_size": self.image_size, "arch": _json_ready(self.arch)}


@dataclass
class TextCandidate:
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    context_length: int

    tower = "text"
    family = "text"

    def spec(self) -> dict[str, Any]:
        return {"family": "text", "width": self.width, "layers": self.layers, "heads": self.heads,
                "mlp_ratio": float(self.mlp_ratio)}

    def key(self, embed_dim: int, vocab_size: int = 4096) -> str:
        return canonical({"tower": "text", "context_length": self.context_length, "embed_dim": embed_dim,
                          "vocab_size": vocab_size, **self.spec()})

    def name(self) -> str:
        return f"text_w{self.width}_l{self.layers}_h{self.heads}_m{self.mlp_ratio:g}_c{self.context_length}"

    def as_dict(self) -> dict[str, Any]:
        return {"tower": "text", "family": "text", "context_length": self.context_length, "arch": self.spec()}


def candidate_from_dict(d: dict[str, Any]) -> ImageCandidate | TextCandidate:
    """Inverse of `as_dict` (candidates.jsonl rows)."""
    if d.get("tower") == "text":
        a = d["arch"]
        return TextCandidate(a["width"], a["layers"], a["heads"], a["mlp_ratio"], d["context_length"])
    return ImageCandidate(d["family"], d["image_size"], dict(d["arch"]))


def check_image_spec(spec: Any) -> dict[str, Any]:
    """A stored image spec -> itself, or ValueError naming what is wrong (recipes turn it into one line)."""
    if not isinstance(spec, dict) or spec.get("family") not in IMAGE_FAMILIES:
        fam = spec.get("family") if isinstance(spec, dict) else spec
        raise ValueError(f"spec: family {fam!r} is not a searchable image family; one of {', '.join(IMAGE_FAMILIES)}")
    want = set(_IMAGE_KEYS[spec["family"]])
    have = set(spec) - {"family"}
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        raise ValueError(f"spec: a {spec['family']} spec needs exactly {', '.join(sorted(want))}"
                         + (f"; missing {', '.join(missing)}" if missing else "") + (f"; unknown {', '.join(extra)}" if extra else ""))
    return spec


def check_text_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or set(spec) - {"family"} != set(_TEXT_KEYS):
        raise ValueError(f"spec: a text spec needs exactly {', '.join(_TEXT_KEYS)}")
    if spec["width"] % spec["heads"]:
        raise ValueError(f"spec: width {spec['width']} is not divisible by heads {spec['heads']}")
    return spec


# ------------------------------------------------------------------------------------------------ builders
def _mobilevit_cfg(a: dict[str, Any]):
    """MobileViT (v1) as a timm ByobNet config, built with timm's own block helpers (the mobilevit_xxs layout)."""
    from timm.models.byobnet import ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    c, td, tdep, br = a["channels"], a["transformer_dims"], a["transformer_depths"], float(a["expansion"])
    return ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=c[0], s=1, br=br),
            _inverted_residual_block(d=a["ir_depth"], c=c[1], s=2, br=br),
            *(_mobilevit_block(d=1, c=c[i + 2], s=2, transformer_dim=td[i], transformer_depth=tdep[i], patch_size=2, br=br)
              for i in range(3)),
        ),
        stem_chs=a["stem"], stem_type="3x3", stem_pool="", downsample="", act_layer="silu", num_features=a["num_features"],
    )


def _mobilevitv2_cfg(a: dict[str, Any]):
    """MobileViT-v2 (separable linear attention) as a timm ByobNet config, width set by a multiplier."""
    from timm.models.byobnet import ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevitv2_block

    m, br = float(a["multiplier"]), float(a["expansion"])
    c = [int(x * m) for x in (64, 128, 256, 384, 512)]
    d = a["transformer_depths"]
    return ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=c[0], s=1, br=br),
            _inverted_residual_block(d=a["ir_depth"], c=c[1], s=2, br=br),
            *(_mobilevitv2_block(d=1, c=c[i + 2], s=2, transformer_depth=d[i]) for i in range(3)),
        ),
        stem_chs=int(32 * m), stem_type="3x3", stem_pool="", downsample="", act_layer="silu",
    )


def _mobilenetv4_conv(a: dict[str, Any]) -> nn.Module:
    """MobileNetV4-Conv-Small's layout (timm's own arch-def strings and builder) with a width multiplier, the IR
    repeats of stages 2 and 3, the IR expansion and the head width as knobs. Plain conv + BN + ReLU: every op has an
    int8 XNNPACK kernel, which is why it is here (the MobileViT families keep LayerNorm / softmax in fp32)."""
    from functools import partial

    from timm.models._efficientnet_builder import decode_arch_def, round_channels
    from timm.models.mobilenetv3 import MobileNetV3

    m, e = float(a["multiplier"]), a["expansion"]
    r2, r3 = a["ir_repeats"]
    arch_def = [
        ["cn_r1_k3_s2_e1_c32", "cn_r1_k1_s1_e1_c32"],
        ["cn_r1_k3_s2_e1_c96", "cn_r1_k1_s1_e1_c64"],
        ["uir_r1_a5_k5_s2_e3_c96", f"uir_r{r2}_a0_k3_s1_e{e:g}_c96", "uir_r1_a3_k0_s1_e4_c96"],
        ["uir_r1_a3_k3_s2_e6_c128", "uir_r1_a5_k5_s1_e4_c128", f"uir_r{r3}_a0_k5_s1_e{e:g}_c128"],
        ["cn_r1_k1_s1_c960"],
    ]
    return MobileNetV3(block_args=decode_arch_def(arch_def), num_classes=0, head_bias=False, head_norm=True,
                       num_features=int(a["num_features"]), stem_size=32, fix_stem=m < 1.0,
                       round_chs_fn=partial(round_channels, multiplier=m), act_layer=nn.ReLU)


def build_image_backbone(spec: dict[str, Any], image_size: int) -> nn.Module:
    """A timm backbone (num_classes=0: pooled features out) for a checked image spec."""
    import timm
    from timm.models.byobnet import ByobNet

    a = {k: v for k, v in check_image_spec(spec).items() if k != "family"}
    family = spec["family"]
    if family == "vit":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=image_size,
                                 patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
                                 num_heads=a["num_heads"], mlp_ratio=float(a["mlp_ratio"]))
    if family == "mobilevit":
        return ByobNet(cfg=_mobilevit_cfg(a), num_classes=0)
    if family == "mobilevitv2":
        return ByobNet(cfg=_mobilevitv2_cfg(a), num_classes=0)
    if family == "mobilenetv4":
        return _mobilenetv4_conv(a)
    mixers = ("repmixer",) * 3 + (a["last_mixer"],)
    return timm.create_model("fastvit_t8", pretrained=False, num_classes=0, layers=tuple(a["layers"]),
                             embed_dims=tuple(a["embed_dims"]), mlp_ratios=(float(a["mlp_ratio"]),) * 4,
                             token_mixers=mixers)


# ------------------------------------------------------------------------------------------------ spaces
@dataclass(frozen=True)
class ImageSpace:
    """Choices per family; a draw picks one value per choice (uniformly), so every candidate is a valid timm model."""

    families: Sequence[str] = IMAGE_FAMILIES
    image_sizes: Sequence[int] = (64,)


@dataclass(frozen=True)
class TextSpace:
    widths: Sequence[int] = (64, 96, 128, 192)
    layers: Sequence[int] = (1, 2, 3, 4)
    heads: Sequence[int] = (2, 4)
    mlp_ratios: Sequence[float] = (2.0, 4.0)
    context_lengths: Sequence[int] = (16, 24, 32)


def _scaled(base: Sequence[int], factor: float, multiple: int = 8) -> list[int]:
    return [max(multiple, int(round(b * factor / multiple)) * multiple) for b in base]


def sample_image(family: str, image_size: int, rng: random.Random) -> ImageCandidate:
    """One draw from a family's settings (the ranges bracket timm's smallest variants at phone latencies)."""
    pick = rng.choice
    if family == "vit":
        heads = pick([2, 3, 4])
        width = heads * pick([32, 48, 64]) if heads != 3 else 3 * pick([32, 48, 64])
        patch = pick([8, 16]) if image_size >= 48 else 8
        arch = dict(patch_size=patch, embed_dim=width, depth=pick([3, 4, 6, 8]), num_heads=heads,
                    mlp_ratio=float(pick([2, 3, 4])))
    elif family == "mobilevit":
        w, t = pick([0.75, 1.0, 1.25, 1.5]), pick([0.75, 1.0, 1.25, 1.5])
        arch = dict(stem=_scaled([16], w)[0], channels=_scaled([16, 24, 48, 64, 80], w),
                    ir_depth=pick([1, 2, 3]), transformer_dims=_scaled([64, 80, 96], t, 16),
                    transformer_depths=list(pick([(1, 2, 1), (2, 2, 2), (2, 4, 3), (2, 3, 2)])),
                    expansion=float(pick([2, 3, 4])), num_features=pick([160, 256, 320]))
    elif family == "mobilevitv2":
        arch = dict(multiplier=pick([0.25, 0.375, 0.5, 0.625, 0.75]), ir_depth=pick([1, 2]),
                    transformer_depths=list(pick([(1, 1, 1), (1, 2, 1), (2, 4, 3), (2, 2, 2)])),
                    expansion=float(pick([2, 3])))
    elif family == "fastvit":
        base = pick([24, 32, 48])
        arch = dict(layers=list(pick([(1, 1, 2, 1), (2, 2, 4, 2), (1, 2, 3, 1), (2, 2, 6, 2)])),
                    embed_dims=[base, base * 2, base * 4, base * 8], mlp_ratio=float(pick([2, 3])),
                    last_mixer=pick(["repmixer", "attention"]))
    elif family == "mobilenetv4":
        # Wider than timm's conv-small (x1.0): its int8 program is ~3x faster than MobileViT's per MAC, so a budget
        # set by a MobileViT affords 1.5-2.5x the width.
        arch = dict(multiplier=pick([0.75, 1.0, 1.5, 2.0, 2.5]), ir_repeats=list(pick([(2, 2), (4, 2), (4, 3), (6, 4)])),
                    expansion=float(pick([2, 3, 4])), num_features=pick([256, 512, 1024]))
    else:
        raise ValueError(f"unknown image family {family!r}; one of {', '.join(IMAGE_FAMILIES)}")
    return ImageCandidate(family, image_size, arch)


def sample_text(space: TextSpace, rng: random.Random) -> TextCandidate:
    heads = rng.choice(list(space.heads))
    widths = [w for w in space.widths if w % heads == 0] or [heads * 32]
    return TextCandidate(rng.choice(widths), rng.choice(list(space.layers)), heads,
                         float(rng.choice(list(space.mlp_ratios))), rng.choice(list(space.context_lengths)))


def sample_image_candidates(space: ImageSpace, n: int, seed: int) -> list[ImageCandidate]:
    """n distinct candidates, families taken in turn (so every family is represented), same seed -> same list."""
    rng = random.Random(seed)
    out: list[ImageCandidate] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        family = space.families[len(out) % len(space.families)] if tries < 20 * n else rng.choice(list(space.families))
        cand = sample_image(family, rng.choice(list(space.image_sizes)), rng)
        tries += 1
        if (k := cand.key(0)) not in seen:
            seen.add(k)
            out.append(cand)
    return out


def sample_text_candidates(space: TextSpace, n: int, seed: int) -> list[TextCandidate]:
    rng = random.Random(seed + 7919)
    out: list[TextCandidate] = []
    seen: set[str] = set()
    for _ in range(50 * n):
        if len(out) >= n:
            break
        cand = sample_text(space, rng)
        if (k := cand.key(0)) not in seen:
            seen.add(k)
            out.append(cand)
    return out


# ------------------------------------------------------------------------------------------------ cost
def count_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one batch-1 forward (torch's FLOP counter / 2): the predictor's main feature."""
    from torch.utils.flop_counter import FlopCounterMode

    was = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*(x[:1] for x in inputs))
    finally:
        module.train(was)
    return int(counter.get_total_flops() // 2)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
