"""The dual encoder (image tower + text tower + temperature) and its on-disk form.

A checkpoint is a folder: `model.safetensors` (weights, no pickle), `model.json` (how to rebuild the towers) and
`tokenizer.json`. Students and the reference teacher share this format, so one loader serves both.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from compress.atomic import atomic_path, write_json
from compress.errors import UserError, one_line
from compress.tokenizer import BilingualTokenizer
from students.registry import create_image_tower, create_text_tower


@dataclass
class DualEncoderSpec:
    image_arch: str
    text_arch: str
    embed_dim: int
    image_size: int
    context_length: int
    vocab_size: int
    # A searched architecture (students/spaces.py spec): rebuilt from here, no registry entry needed.
    image_spec: dict | None = None
    text_spec: dict | None = None


class DualEncoder(nn.Module):
    def __init__(self, spec: DualEncoderSpec, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.spec = spec
        self.image = create_image_tower(spec.image_arch, spec.embed_dim, spec.image_size, spec.image_spec)
        self.text = create_text_tower(spec.text_arch, spec.vocab_size, spec.embed_dim, spec.context_length, spec.text_spec)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def tower_params(self) -> int:
        return sum(p.numel() for p in self.image.parameters()) + sum(p.numel() for p in self.text.parameters())


def save_checkpoint(model: DualEncoder, tokenizer: BilingualTokenizer, folder: str | Path, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    tokenizer.save(folder / "tokenizer.json")
    write_json(folder / "model.json", {"spec": asdict(model.spec), **(extra or {})})
    return folder


def load_checkpoint(folder: str | Path) -> tuple[DualEncoder, BilingualTokenizer, dict]:
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(
            f"{str(folder)!r} is not a checkpoint folder (needs model.json + model.safetensors); "
            "pass a run's checkpoint folder, e.g. runs/<name>/student_fp32"
        )
    fix = "re-run the stage that wrote it (`dcclip-compress run RECIPE --out RUN --resume` redoes what is missing)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        spec = DualEncoderSpec(**meta["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exn:
        raise UserError(f"checkpoint {str(folder)!r}: model.json is damaged ({type(exn).__name__}: "
                        f"{str(exn)[:100]}); {fix}") from None
    model = DualEncoder(spec)
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exn:  # truncated, a pickle, or another model's
        why = (one_line(exn) or type(exn).__name__)[:120]
        raise UserError(f"checkpoint {str(folder)!r}: model.safetensors is damaged or belongs to another model "
                        f"({why}); {fix}") from None
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", spec.context_length)
    return model.eval(), tokenizer, meta


def example_inputs(model: DualEncoder, batch: int) -> tuple[tuple[torch.Tensor], tuple[torch.Tensor]]:
    """Shapes for capture/lowering: pixels, and ids that are half padding (the mask path must be traced)."""
    s = model.spec
    pixels = torch.rand(batch, 3, s.image_size, s.image_size)
    ids = torch.randint(2, s.vocab_size, (batch, s.context_length))
    ids[:, s.context_length // 2 :] = 0
    return (pixels,), (ids,)
