"""Recipes: YAML validated by a pydantic schema, so every mistake is caught before any work starts.

Errors name the key path, the bad value and what is allowed, in one line (the CLI turns them into exit code 2).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.errors import UserError
from students.registry import IMAGE_ARCHS, TEXT_ARCHS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    kind: Literal["emoji", "manifest", "webdataset"] = "emoji"
    image_size: int = Field(64, ge=16, le=512)
    train_renders: int = Field(8, ge=1, le=64)
    # Glyph styles of the emoji train split, train_renders each ("noto": + monochrome Noto Emoji renders, other draws
    # than the transfer split's). A teacher with more renders/styles trains on a superset of a student's data.
    train_styles: list[Literal["openmoji", "noto"]] = ["openmoji"]
    eval_renders: int = Field(1, ge=1, le=16)
    unseen_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    limit: int | None = Field(None, ge=8)
    manifest: str | None = None
    # kind=webdataset: tar shards, a brace pattern ("data/shards/train-{000000..000009}.tar") or a glob, relative
    # to the working directory; each sample is <key>.jpg|png|webp + <key>.json {"en": ..., "zh": ...}
    shards: str | None = None
    eval_manifest: str | None = None
    cache_dir: str = ".cache/emoji"

    @field_validator("train_styles")
    @classmethod
    def _styles(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("data.train_styles: name each style once, at least one")
        return sorted(v, key=["openmoji", "noto"].index)  # canonical order: the order named does not matter

    @model_validator(mode="after")
    def _manifest_needs_path(self) -> "DataConfig":
        if self.kind == "manifest" and not self.manifest:
            raise ValueError("data.manifest: kind 'manifest' needs a path to a JSONL file")
        if self.kind == "webdataset" and not self.shards:
            raise ValueError("data.shards: kind 'webdataset' needs a shard pattern such as "
                             "data/shards/train-{000000..000009}.tar")
        return self


class TeacherConfig(Strict):
    kind: Literal["reference", "hf", "none"] = "reference"
    recipe: str = "recipes/emoji_teacher.yaml"  # kind=reference: the recipe that trains (and caches) it
    spec: str | None = None  # kind=hf: hub id or local folder
    # kind=hf: vision blocks (0-based, negative from the end) whose patch tokens are the distilled maps; unset: three
    # evenly spaced blocks ending with the last; []: no maps. Range-checked against the checkpoint when it loads.
    map_layers: list[Annotated[int, Field(strict=True, ge=-1000, le=1000)]] | None = Field(None, max_length=64)
    # kind=hf: text block whose pooled token (CLS, or EOS for CLIP) is the text-hidden target; unset: the pooled
    # state the text projection consumes.
    text_layer: Annotated[int, Field(strict=True, ge=-1000, le=1000)] | None = None
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"  # kind=hf: weights and compute of the frozen teacher
    device: Literal["auto", "cpu", "cuda"] = "auto"  # kind=hf: auto = this process's GPU if there is one, else CPU

    @model_validator(mode="after")
    def _hf_needs_spec(self) -> "TeacherConfig":
        if self.kind == "hf" and not self.spec:
            raise ValueError("teacher.spec: kind 'hf' needs a hub id or a local folder")
        return self


class ImageStudentConfig(Strict):
    arch: str = "mobilevit_xxs"

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, IMAGE_ARCHS, "student")


class TextStudentConfig(Strict):
    arch: str = "text_tiny"
    context_length: int = Field(32, ge=4, le=512)
    vocab_size: int = Field(4096, ge=64, le=250_000)

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, TEXT_ARCHS, "text student")


class StudentsConfig(Strict):
    image: ImageStudentConfig = ImageStudentConfig()
    text: TextStudentConfig = TextStudentConfig()
    embed_dim: int = Field(128, ge=8, le=4096)


class DistillConfig(Strict):
    enabled: bool = True
    epochs: int = Field(4, ge=0)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    map_weight: float = Field(1.0, ge=0)
    embed_weight: float = Field(1.0, ge=0)
    hidden_weight: float = Field(0.5, ge=0)


class AlignConfig(Strict):
    enabled: bool = True
    epochs: int = Field(4, ge=0)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    image_lr_scale: float = Field(1.0, gt=0)  # BN convnets from scratch take a larger step than the text transformer
    weight_decay: float = Field(0.05, ge=0)
    init_temperature: float = Field(0.07, gt=0, lt=1)
    margin_reg: float = Field(0.0, ge=0)
    margin: float = Field(0.5, ge=-1, le=1)
    distill_weight: float = Field(0.0, ge=0)  # teacher soft-target KL on the in-batch similarities (needs a teacher)


class QATConfig(Strict):
    enabled: bool = True
    epochs: int = Field(1, ge=0)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-4, gt=0)


class ExportConfig(Strict):
    target: str = "xnnpack"
    quant: list[Literal["fp32", "int8"]] = ["fp32", "int8"]
    enabled: bool = True


class EvalConfig(Strict):
    splits: list[Literal["eval", "transfer", "unseen"]] = ["eval", "transfer", "unseen"]
    latency_runs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)


class Recipe(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    students: StudentsConfig = StudentsConfig()
    distill: DistillConfig = DistillConfig()
    align: AlignConfig = AlignConfig()
    qat: QATConfig = QATConfig()
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (used to cache the reference teacher)."""
        payload = self.model_dump(exclude={"eval"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _check_name(value: str, known: dict, kind: str) -> str:
    if value not in known:
        close = difflib.get_close_matches(value, list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        raise ValueError(f"{value!r} is not a known {kind}; {hint}")
    return value


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "recipe"
    if e["type"] == "extra_forbidden":
        parent = _model_at(Recipe, e["loc"][:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{loc}: unknown key; {hint}"
    msg = e["msg"].removeprefix("Value error, ")
    if msg.split(":", 1)[0].startswith(loc):
        return msg
    if e["type"] in ("literal_error", "enum"):
        return f"{loc}: {e.get('input')!r} is not allowed; {msg[0].lower() + msg[1:]}"
    bad = e.get("input")
    shown = f" (got {bad!r})" if bad is not None and not isinstance(bad, dict) and repr(bad) not in msg else ""
    return f"{loc}: {msg[0].lower() + msg[1:]}{shown}"


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """`--set key.path=value` (value parsed as YAML), applied before validation so errors name the same key path."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set align.epochs=2")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def parse_recipe(raw: Any, overrides: Sequence[str] = (), source: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections (name, data, teacher, ...), got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {_format_error(err)}") from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {str(path)!r} not found; pass a YAML file such as recipes/mobilevit_int8.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe {str(path)!r}: not valid YAML{where}; fix the syntax") from None
    return parse_recipe(raw, overrides, source=str(path))
