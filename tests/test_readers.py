"""One way to read a file (issue 19, compress/readers.py): no bare reads elsewhere, and every damaged file a reader
meets is one line naming the file."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save

from compress import readers
from compress.errors import UserError
from tests.fuzz import BYTE_DAMAGE, damage_bytes

ROOT = Path(__file__).resolve().parents[1]

# A bare read: file text or bytes, a JSON file object, an image, a safetensors or tokenizer file, a YAML or pickle load.
BARE = re.compile(r"\.read_text\(|\.read_bytes\(|\bjson\.load\(|Image\.open\(|\bload_file\(|\bsafe_open\(|"
                  r"Tokenizer\.from_file\(|yaml\.(safe_)?load\(|torch\.load\(|\bopen\([^)]*['\"]r|\.open\(['\"]r")

# Files that read through their own format-specific reader, each with its own one-line errors (and tests of them).
ALLOWED = {
    "compress/readers.py": "the readers themselves",
    "compress/atomic.py": "sha256_file streams a file the caller has just checked",
    "compress/recipe/load.py": "the recipe reader: every failure one line (tests/test_bad_recipes.py)",
    "compress/data/manifest.py": "a JSONL manifest streamed line by line; bad rows skipped and counted",
    "compress/data/unpaired.py": "unpaired JSONL / text streamed line by line; bad rows skipped and counted",
    "compress/data/webdataset.py": "tar shards streamed member by member; a damaged shard is counted (corrupt_shard)",
    "compress/data/store.py": "an image's bytes at an offset of a shard; its own one-line errors (cut short, unreadable)",
    "compress/train/feature_cache/shards.py": "teacher-cache shard headers and hashes: a damaged shard is rebuilt",
    "mobile_export/pte_check.py": ".pte / .bpte headers checked before the runtime sees them",
    "mobile_export/bench/host.py": "/proc files of this machine",
    "compress/home.py": "probes pyproject.toml to tell a source checkout; unreadable means not one (base layer)",
    "mobile_export/bundle/android.py": "standard library only: build-apk.sh runs it with the system python3",
}


def bare_reads(root: Path = ROOT) -> list[str]:
    found = []
    for pkg in ("compress", "students", "mobile_export"):
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in ALLOWED:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if BARE.search(code):
                    found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_no_bare_reads_outside_the_readers():
    assert bare_reads() == [], "read files through compress/readers.py (or say why in ALLOWED)"


def test_the_grep_catches_a_planted_read(tmp_path):
    (tmp_path / "compress").mkdir()
    (tmp_path / "compress" / "x.py").write_text('import json\ndoc = json.loads(p.read_text(encoding="utf-8"))\n')
    (tmp_path / "compress" / "y.py").write_text("from PIL import Image\nimg = Image.open(p)  # decode\n")
    assert [f.split(":")[0] for f in bare_reads(tmp_path)] == ["compress/x.py", "compress/y.py"]


TORCH_LOAD = "torch" + ".load("  # spelt in two so that this file itself holds no bare call for a grep to find


def test_torch_load_always_weights_only():
    for pkg in ("compress", "students", "mobile_export", "bench"):
        for path in (ROOT / pkg).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if TORCH_LOAD in line.split("#", 1)[0]:
                    assert "weights_only=True" in line, f"{path}: {line.strip()}"


# ------------------------------------------------------------------------------------------------ damaged files
def _one_line(exn: UserError, path: Path) -> str:
    msg = str(exn)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def _safetensors_bytes() -> bytes:
    return save({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)})


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=100, deadline=None)
@given(BYTE_DAMAGE)
def test_a_damaged_safetensors_file_is_one_line_or_still_loads(tmp_path_factory, damage):
    """Any damage: a clean load or one line, never a traceback or a pickle load. A flipped byte inside the data is
    undetectable here (safetensors holds no checksum; the bundle and teacher cache add sha256 where it matters)."""
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    path.write_bytes(damage_bytes(_safetensors_bytes(), *damage))
    try:
        tensors = readers.read_safetensors(path, "weights", "rebuild them")
    except UserError as exn:
        assert "weights" in _one_line(exn, path)
    else:  # a flipped byte in the header can rename the tensor and still be valid safetensors
        assert len(tensors) <= 1 and all(isinstance(t, torch.Tensor) for t in tensors.values())


@settings(max_examples=100, deadline=None)
@given(BYTE_DAMAGE)
def test_a_damaged_image_is_one_line_or_still_decodes(tmp_path_factory, damage):
    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes(damage_bytes(_png_bytes(), *damage))
    try:
        img = readers.open_image(path)
    except UserError as exn:
        assert "image" in _one_line(exn, path)
    else:
        assert img.size[0] > 0


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=32).map(lambda t: t.encode("utf-8")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                              max_leaves=8).map(lambda v: json.dumps(v).encode())))
def test_any_bytes_as_a_json_object_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("js") / "m.json"
    path.write_bytes(data)
    try:
        doc = readers.read_json(path, "manifest", "re-export it")
    except UserError as exn:
        assert _one_line(exn, path).endswith("; re-export it")
    else:
        assert isinstance(doc, dict)


def test_the_reasons_are_named(tmp_path):
    missing, folder, text = tmp_path / "nope.json", tmp_path / "d", tmp_path / "gbk.json"
    folder.mkdir()
    text.write_bytes('{"a": "中文"}'.encode("gbk"))
    for path, reason in ((missing, "not found"), (folder, "is a folder"), (text, "not UTF-8")):
        with pytest.raises(UserError, match=reason):
            readers.read_json(path, "manifest", "fix it")
    (tmp_path / "l.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="holds a list, not an object"):
        readers.read_json(tmp_path / "l.json", "manifest", "fix it")
    with pytest.raises(UserError, match="'files' is a whole number, not an object"):
        readers.field({"files": 3}, "files", dict, tmp_path / "m.json", "manifest", "fix it")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 MP of one bit per pixel: a 10 kB file
    with pytest.raises(UserError, match="decompression bomb"):
        readers.open_image(path)


def test_a_number_too_long_to_convert_is_one_line(tmp_path):
    """Found by the bundle fuzz: 4,000+ digits hit Python's int-conversion limit (a ValueError, not a JSON error)."""
    path = tmp_path / "m.json"
    path.write_text("2" * 5000)
    with pytest.raises(UserError, match="is not valid JSON"):
        readers.read_json(path, "manifest", "fix it")
