"""The dual encoder (image tower + text tower + temperature) and its on-disk form.

A checkpoint is a folder: `model.safetensors` (weights, no pickle), `model.json` (how to rebuild the towers) and
`tokenizer.json`. Students and the reference teacher share this format, so one loader serves both.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from compress.atomic import atomic_path, sha256_file, write_json
from compress.errors import UserError, one_line
from compress.readers import field, load_safetensors, read_bytes, read_json
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
    # the files' sha256: a checkpoint copied between machines and cut short or altered is refused, not loaded
    sha = {name: sha256_file(folder / name) for name in CHECKPOINT_FILES}
    write_json(folder / "model.json", {"spec": asdict(model.spec), **(extra or {}), "sha256": sha})
    return folder


CHECKPOINT_FILES = ("model.safetensors", "tokenizer.json")


def _check_files(folder: Path, meta: dict, fix: str, weights: bytes) -> None:
    """The files against model.json's sha256 (checkpoints from before it carry none and are not checked); `weights`:
    model.safetensors' bytes, read once for the hash and the load."""
    sha = meta.get("sha256")
    if sha is None:
        return
    if not isinstance(sha, dict):
        raise UserError(f"checkpoint {str(folder)!r}: model.json's sha256 is not an object; {fix}")
    for name in CHECKPOINT_FILES:
        got = hashlib.sha256(weights).hexdigest() if name == "model.safetensors" else sha256_file(folder / name)
        if sha.get(name) != got:
            raise UserError(f"checkpoint {str(folder)!r}: {name} does not match its sha256 in model.json (altered or "
                            f"cut short after it was written); {fix}")


def load_checkpoint(folder: str | Path) -> tuple[DualEncoder, BilingualTokenizer, dict]:
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(
            f"{str(folder)!r} is not a checkpoint folder (needs model.json + model.safetensors); "
            "pass a run's checkpoint folder, e.g. runs/<name>/student_fp32"
        )
    fix = "re-run the stage that wrote it (`dcclip-compress run RECIPE --out RUN --resume` redoes what is missing)"
    meta = read_json(meta_path, "checkpoint file", fix)
    spec_doc = field(meta, "spec", dict, meta_path, "checkpoint file", fix)
    raw = read_bytes(folder / "model.safetensors", "checkpoint file", fix)
    _check_files(folder, meta, fix, raw)
    weights = load_safetensors(raw, folder / "model.safetensors", "checkpoint file", fix)
    try:
        spec = _checked_spec(spec_doc)
        with torch.device("meta"):  # shapes first, no memory: a damaged spec may ask for a huge model
            model = DualEncoder(spec)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} != {k: tuple(v.shape) for k, v in weights.items()}:
            raise ValueError("the weights in model.safetensors do not have the shapes its model.json spec builds")
        model.load_state_dict(weights, assign=True)  # the file's tensors become the parameters: no random init first
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a buffer the file does not hold
            model = DualEncoder(spec)
            model.load_state_dict(weights)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError, UserError) as exn:
        why = (one_line(exn) or type(exn).__name__)[:120]
        raise UserError(f"checkpoint {str(folder)!r}: model.json's spec and model.safetensors do not match or are "
                        f"damaged ({why}); {fix}") from None
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", spec.context_length)
    if tokenizer.vocab_size > spec.vocab_size:  # its ids would index past the text tower's embedding table
        raise UserError(f"checkpoint {str(folder)!r}: tokenizer.json holds {tokenizer.vocab_size} tokens, the model "
                        f"embeds {spec.vocab_size} (the two files are from different checkpoints); {fix}")
    return model.eval(), tokenizer, meta


SPEC_LIMITS = {"embed_dim": 16_384, "image_size": 4_096, "context_length": 8_192, "vocab_size": 2_000_000}


def _checked_spec(doc: dict) -> DualEncoderSpec:
    """A DualEncoderSpec from model.json's "spec", each field of its kind and size (TypeError / ValueError if not)."""
    spec = DualEncoderSpec(**doc)
    for name, top in SPEC_LIMITS.items():
        v = getattr(spec, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            raise ValueError(f"spec.{name} is {v!r}, not a whole number in 1..{top}")
    for name in ("image_arch", "text_arch"):
        if not isinstance(getattr(spec, name), str):
            raise ValueError(f"spec.{name} is not a name")
    for name in ("image_spec", "text_spec"):
        if getattr(spec, name) is not None and not isinstance(getattr(spec, name), dict):
            raise ValueError(f"spec.{name} is neither null nor an object")
    return spec


def example_inputs(model: DualEncoder, batch: int) -> tuple[tuple[torch.Tensor], tuple[torch.Tensor]]:
    """Shapes for capture/lowering: pixels, and ids that are half padding (the mask path must be traced)."""
    s = model.spec
    pixels = torch.rand(batch, 3, s.image_size, s.image_size)
    ids = torch.randint(2, s.vocab_size, (batch, s.context_length))
    ids[:, s.context_length // 2 :] = 0
    return (pixels,), (ids,)
