"""`dcclip-compress verify BUNDLE`: an export bundle checked against its own manifest, through the host runtime.

Every file listed in manifest.json must be there with its size and sha256; each BundledProgram's samples must
reproduce their expected outputs through ExecuTorch's bundled-program runtime; the label embeddings must match what
the text program computes now. A program the host runtime cannot run (an NPU or Core ML export) is checked for
structure and hashes only, and `verify` says it did not run it. The first failure is a one-line `UserError`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from compress.atomic import sha256_file
from compress.errors import UserError
from compress.prompts import LANGS
from compress.readers import field, read_bytes, read_json
from mobile_export.bundle.android import runtime_warning
from compress.prompts import is_template
from mobile_export.bundle.labels import Label, embed_rows
from mobile_export.bundle.write import BUNDLE_FORMAT
from mobile_export.lower.targets import TARGETS
from mobile_export.pte_check import MANIFEST, check_bundled_program, check_pte

LABEL_CHECK_ROWS = 4  # labels per language that `verify` re-embeds through the text .pte
LABEL_COSINE_MIN = 0.999


def runs_on_host(manifest: dict[str, Any]) -> bool:
    """Whether the host runtime can run the manifest's programs (its target's capability; a target this checkout
    does not know is taken for a host bundle, the format's default)."""
    target = TARGETS.get(str(manifest.get("target", "")))
    return target is None or target.runs_on_host


def load_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise UserError(f"verify: {str(folder)!r} is not a folder; pass the bundle folder written by "
                        "`dcclip-compress export`")
    path = folder / MANIFEST
    if not path.is_file():
        why = ("an export folder from before bundles; re-export it" if (folder / "bundle.json").is_file()
               else "it is not an export bundle")
        raise UserError(f"verify: {str(folder)!r} has no {MANIFEST} ({why}); verify a bundle written by "
                        "`dcclip-compress export --target xnnpack` or `dcclip-compress run`")
    manifest = read_json(path, "verify: bundle manifest", "re-export the bundle", kind=None)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"verify: {str(path)!r} is not a {BUNDLE_FORMAT} manifest; re-export the bundle")
    return manifest


def check_files(folder: Path, manifest: dict[str, Any]) -> int:
    """Every file the manifest lists is there with its size and sha256; returns how many."""
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise UserError(f"verify: {str(path)!r} is missing (listed in {MANIFEST}); re-export the bundle or copy it again")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise UserError(f"verify: {str(path)!r} is {size} bytes, {MANIFEST} says {entry.get('bytes')} (truncated "
                            "or altered); re-export the bundle or copy it again")
        if sha256_file(path) != entry.get("sha256"):
            raise UserError(f"verify: {str(path)!r} does not match its sha256 in {MANIFEST} (altered after export); "
                            "re-export the bundle or copy it again")
    labels = ("labels.json",) if runs_on_host(manifest) else ()
    required = ("bundle.json", "tokenizer.json", "preprocess.json") + labels
    for name in required:  # an NPU export has no label embeddings (its text program cannot run here)
        if name not in manifest["files"]:
            raise UserError(f"verify: {MANIFEST} of {str(folder)!r} lists no {name}; re-export the bundle")
    return len(manifest["files"])


def run_bundled_samples(folder: Path, name: str, info: dict[str, Any]) -> int:
    """Load `<name>.bpte` through ExecuTorch's bundled-program runtime and compare every sample's output with the
    expected one; the embedded program must be byte-identical to the `.pte` beside it."""
    from executorch.extension.pybindings import portable_lib

    from mobile_export.runtime import _runtime, runtime_stderr

    pte = folder / name
    check_pte(pte)
    bp = info["bundled_program"]
    bpte = folder / bp["file"]
    check_bundled_program(bpte)
    data = read_bytes(bpte, "verify: bundled program", "re-export the bundle")
    if read_bytes(pte, "verify: program", "re-export the bundle") not in data:
        raise UserError(f"verify: {str(bpte)!r} does not hold {name} (the BundledProgram and the .pte differ); "
                        "re-export the bundle")
    _runtime()  # registers the quantized kernels
    method = info.get("method", "forward")
    with runtime_stderr() as log:
        try:
            module = portable_lib._load_bundled_program_from_buffer(data)
        except RuntimeError as e:
            raise UserError(f"verify: the runtime could not load {str(bpte)!r} ({log.last or e}); re-export the bundle") from None
    for i in range(int(bp["samples"])):
        with runtime_stderr() as log:
            try:
                module.verify_result_with_bundled_expected_output(method, i, float(bp["rtol"]), float(bp["atol"]))
            except RuntimeError as e:
                raise UserError(f"verify: {name} sample {i} does not reproduce its expected output within rtol "
                                f"{bp['rtol']:g}, atol {bp['atol']:.3g} ({log.last or e})") from None
    return int(bp["samples"])


def check_label_embeddings(folder: Path, manifest: dict[str, Any]) -> int:
    """Shape and norms of every label embedding file, and a few rows re-embedded through the text .pte."""
    from compress.tokenizer import BilingualTokenizer
    from mobile_export.runtime import PteModule

    path, what, fix = folder / "labels.json", "verify: label file", "re-export the bundle"
    doc = read_json(path, what, fix)
    rows = field(doc, "labels", list, path, what, fix)
    def named(r) -> bool:
        names = [r.get(lang) for lang in LANGS] if isinstance(r, dict) else [None]
        return all(n is None or isinstance(n, str) for n in names) and any(names)

    if not all(named(r) for r in rows):
        raise UserError(f"verify: {str(path)!r}: every label needs an \"en\" or \"zh\" string; {fix}")
    labels = [Label(r.get("en"), r.get("zh")) for r in rows]
    templates = doc.get("templates") or {lang: [t] for lang, t in (doc.get("prompt_templates") or {}).items()} or None
    if templates is not None and not (isinstance(templates, dict) and all(
            isinstance(ts, list) and ts and all(is_template(t) for t in ts)
            for ts in templates.values())):
        raise UserError(f"verify: {str(path)!r}: \"templates\" must map each language to a list of templates with one "
                        f"{{}} each; {fix}")
    context = int(manifest["model"]["context_length"])
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", context)
    checked = 0
    for quant, entry in doc["embeddings"].items():
        path = folder / entry["file"]
        shape = tuple(entry["shape"])
        if shape[:2] != (len(LANGS), len(labels)) or path.stat().st_size != 4 * math.prod(shape):
            raise UserError(f"verify: {str(path)!r} does not hold {len(LANGS)} x {len(labels)} embeddings of shape "
                            f"{list(shape)}; re-export the bundle")
        emb = np.fromfile(path, dtype="<f4").reshape(shape)
        norms = np.linalg.norm(emb, axis=-1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise UserError(f"verify: {str(path)!r} rows are not L2-normalised; re-export the bundle")
        text = PteModule(folder / entry["computed_with"])
        rows = labels[:LABEL_CHECK_ROWS]
        for li, lang in enumerate(LANGS):
            fresh = embed_rows(lambda prompts: text(tokenizer(prompts)), rows, lang, templates).numpy()
            cosine = (fresh * emb[li, : len(rows)]).sum(-1)
            if cosine.min() < LABEL_COSINE_MIN:
                raise UserError(f"verify: {str(path)!r} {lang} rows differ from {entry['computed_with']}'s output "
                                f"(cosine {cosine.min():.4f} < {LABEL_COSINE_MIN}); re-export the bundle")
        checked += 1
    return checked


def verify_bundle(folder: str | Path) -> Iterator[str]:
    """`dcclip-compress verify BUNDLE`: the manifest's files and hashes, each program's bundled samples through the
    runtime, and the label embeddings. Yields one line per check; the first failure raises a one-line UserError,
    and so does a manifest entry of the wrong shape (edited by hand, or by something else)."""
    try:
        yield from _verify(Path(folder))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exn:
        raise UserError(f"verify: {MANIFEST} of {str(folder)!r} has an entry of the wrong shape ({type(exn).__name__}: "
                        f"{str(exn)[:120]}); re-export the bundle") from None


def _verify(folder: Path) -> Iterator[str]:
    manifest = load_manifest(folder)
    yield f"files: {check_files(folder, manifest)} match {MANIFEST} (size and sha256)"
    if (warning := runtime_warning(manifest)) is not None:  # exported by a newer executorch than the Android app runs
        yield warning
    programs = manifest.get("programs") or {}
    if not programs:
        raise UserError(f"verify: {MANIFEST} of {str(folder)!r} lists no programs; re-export the bundle")
    if not runs_on_host(manifest):  # nothing here runs an NPU or Core ML program: structure and hashes only
        for name in programs:
            check_pte(folder / name)
            yield f"{name}: a well-formed {manifest['target']} program"
        yield f"programs not run: {TARGETS[str(manifest['target'])].not_run_here()}"
        return
    for name, info in programs.items():
        n = run_bundled_samples(folder, name, info)
        yield f"{name}: {n} bundled samples reproduce their expected outputs"
    yield f"labels: {check_label_embeddings(folder, manifest)} embedding file(s) match the text program(s)"
