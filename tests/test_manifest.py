"""JSONL manifest loading on real files: good rows load, every kind of bad row is skipped and counted."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from compress.data.images import PAD_RGB
from compress.data.manifest import load_manifest
from compress.errors import UserError


def _png(path: Path, size: tuple[int, int] = (40, 40), colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _write(path: Path, lines: list[object]) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _row(image: str, en: str = "a red square", zh: str = "红色方块") -> dict[str, str]:
    return {"image": image, "en": en, "zh": zh}


def test_good_rows_load(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "a.png")
    _png(root / "sub" / "b.jpg", size=(80, 40), colour=(20, 200, 20))
    manifest = _write(root / "train.jsonl", [_row("a.png"), "", _row("sub/b.jpg", "a green bar", "绿色长条")])
    data = load_manifest(manifest, image_size=32)
    assert data.used == len(data) == 2 and data.skipped == {} and data.skipped_lines == []
    assert data.images.dtype == torch.uint8 and data.images.shape == (2, 3, 32, 32)
    assert data.en == [("a red square",), ("a green bar",)] and data.zh == [("红色方块",), ("绿色长条",)]
    # The 2:1 image is letterboxed: content in the middle rows, neutral padding above and below.
    wide = data.images[1]
    assert wide[:, 0, 16].tolist() == list(PAD_RGB)
    assert abs(int(wide[1, 16, 16]) - 200) <= 3


def test_root_overrides_manifest_folder(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "lists").mkdir()
    manifest = _write(tmp_path / "lists" / "m.jsonl", [_row("a.png")])
    with pytest.raises(UserError):  # by default paths are relative to the manifest's folder
        load_manifest(manifest)
    data = load_manifest(manifest, root=tmp_path / "images", image_size=16)
    assert data.used == 1


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    manifest = _write(
        tmp_path / "m.jsonl", [_row("ok.png"), _row("corrupt.png"), _row("empty.jpg"), _row("nowhere.png")]
    )
    data = load_manifest(manifest)
    assert data.used == 1 and data.images.shape == (1, 3, 64, 64)
    assert data.skipped == {"corrupt_image": 2, "missing_image": 1}
    assert data.skipped_lines == [(2, "corrupt_image"), (3, "corrupt_image"), (4, "missing_image")]


def test_paths_escaping_root_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _png(root / "ok.png")
    outside = _png(tmp_path / "escape.png")  # exists, so only the path check can refuse it
    (root / "link.png").symlink_to(outside)
    (root / "inside_link.png").symlink_to(root / "ok.png")
    manifest = _write(
        root / "m.jsonl",
        [
            _row("ok.png"),
            _row("../escape.png"),
            _row(str(outside)),  # absolute
            _row("link.png"),  # symlink resolving outside root
            _row("sub/../ok.png"),  # ".." is refused even when it would stay inside
            _row("inside_link.png"),  # a symlink that stays inside is fine
        ],
    )
    data = load_manifest(manifest)
    assert data.used == 2
    assert data.skipped == {"unsafe_path": 4}
    assert [n for n, _ in data.skipped_lines] == [2, 3, 4, 5]


def test_malformed_lines_are_skipped_with_line_numbers(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b"\n".join(
            [
                json.dumps(_row("ok.png")).encode(),
                b"{not json",
                b"[1, 2, 3]",
                json.dumps({"image": "ok.png", "en": "", "zh": " "}).encode(),  # no caption in either language
                json.dumps({"image": "ok.png", "en": 5, "zh": "五"}).encode(),  # a caption of the wrong type
                json.dumps({"image": 3, "en": "x", "zh": "x"}).encode(),
                json.dumps({"image": "ok.png", "en": ["a", 2]}).encode(),
                b"\xff\xfe bad utf-8",
                json.dumps({"image": "ok.png"}).encode(),
            ]
        )
    )
    data = load_manifest(manifest)
    assert data.used == 1
    assert data.skipped == {"bad_json": 3, "missing_field": 3, "no_caption": 2}
    assert data.skipped_lines == [
        (2, "bad_json"),
        (3, "bad_json"),
        (4, "no_caption"),
        (5, "missing_field"),
        (6, "missing_field"),
        (7, "missing_field"),
        (8, "bad_json"),
        (9, "no_caption"),
    ]


def test_one_language_rows_load_with_none_for_the_other(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    manifest = _write(
        tmp_path / "m.jsonl",
        [
            {"image": "ok.png", "en": "only english"},
            {"image": "ok.png", "zh": "只有中文"},
            {"image": "ok.png", "en": "", "zh": ["两个", " ", "说法 "]},  # "" = no English; blanks dropped, stripped
            {"image": "ok.png", "en": None, "zh": []},  # neither: skipped and counted
            _row("ok.png", " both ", "两种"),
        ],
    )
    data = load_manifest(manifest, image_size=16)
    assert data.used == 4 and data.skipped == {"no_caption": 1} and data.skipped_lines == [(4, "no_caption")]
    assert data.en == [("only english",), (), (), ("both",)]
    assert data.zh == [(), ("只有中文",), ("两个", "说法"), ("两种",)]

    pairs = data.pairs()
    assert pairs.en == ["only english", None, None, "both"] and pairs.zh == [None, "只有中文", "两个", "两种"]
    assert pairs.groups.tolist() == [0, 1, 2, 3] and not pairs.templated
    assert pairs.has("en").tolist() == [True, False, False, True]
    assert pairs.has("zh").tolist() == [False, True, True, True] and pairs.has("zh").dtype == torch.bool
    assert pairs.more == {"zh": {2: ("两个", "说法")}}
    rng = random.Random(0)
    assert pairs.captions([3, 1, 0], "en", rng) == ["both", None, "only english"]
    drawn = {pairs.captions([2], "zh", rng)[0] for _ in range(50)}
    assert drawn == {"两个", "说法"}  # a row's captions are all used, drawn at random
    assert pairs.texts("zh") == ["只有中文", "两个", "说法", "两种"] and pairs.texts("en") == ["only english", "both"]


def test_zero_usable_rows_is_a_one_line_user_error(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    manifest = _write(tmp_path / "m.jsonl", [_row("../x.png"), _row("bad.png"), "{oops"])
    with pytest.raises(UserError) as err:
        load_manifest(manifest)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(manifest) in msg
    assert "unsafe_path=1" in msg and "corrupt_image=1" in msg and "bad_json=1" in msg


def test_empty_or_absent_manifest_is_a_user_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no usable rows"):
        load_manifest(empty)
    with pytest.raises(UserError, match="not found"):
        load_manifest(tmp_path / "absent.jsonl")
