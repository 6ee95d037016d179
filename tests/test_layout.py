"""The layout rules, as data: every import points down, and nothing closes a circle.

Imports are read with `ast`, so an import inside a function counts exactly like one at the top of the file (that is
how the old circles grew unnoticed: every closing import sat inside a function). `bench/` is read too; tests are not.

A module's layer is the longest prefix below that names it. A module may import its own layer or any layer ranked
lower; `FORBIDDEN` adds the pairs that share a rank order but must still not meet. To move a module, change its
prefix here in the same commit and say why.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "students", "mobile_export", "bench")

# (module prefix, rank): higher ranks may import lower ones, never the reverse.
LAYERS: tuple[tuple[str, int], ...] = (
    ("bench", 100),  # benchmarks: scripts on top of everything
    ("compress", 95),  # the package face (`from compress import ...`): nothing inside the library imports it
    ("compress.cli", 90),  # click commands only: parse, then call one function of pipeline/ or mobile_export/
    ("compress.pipeline", 80),  # composes the stages; nothing below imports it
    ("compress.search", 70),
    ("compress.train", 60),  # with the teacher-feature cache
    ("compress.teachers", 50),
    ("compress.recipe", 40),  # validates names against the registries below it at load time
    ("compress.quant", 30),
    ("compress.eval", 30),
    ("mobile_export.bench", 28),  # schema < host, adb, vela < run; report
    ("mobile_export.bundle", 26),  # labels < write < verify; parity, delegation
    ("mobile_export.lower", 24),  # capture < one file per backend < the target table; needs no runtime
    ("mobile_export.timing", 22),
    ("mobile_export.runtime", 21),
    ("mobile_export.pte_check", 20),
    ("mobile_export", 20),
    ("compress.data", 10),
    ("compress.tokenizer", 10),
    ("compress.model", 10),
    ("students", 10),
    ("compress.readers", 1),  # the one way to read a file (issue 19): every layer's files go through it
    ("compress.prompts", 0),
    ("compress.errors", 0),
    ("compress.progress", 0),
    ("compress.atomic", 0),
    ("compress.home", 0),  # where .cache/ and runs/ live (DCCLIP_HOME): a path, for every layer
)

# Pairs (importer prefix, imported prefix) that the ranks alone would allow.
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("mobile_export.lower", "mobile_export.runtime"),  # lowering runs nothing: it must work without a runtime
    ("mobile_export.lower", "mobile_export.timing"),
    ("compress.quant", "compress.eval"),
    ("compress.eval", "compress.quant"),
)

# Nothing below these may import them (rule 1 and 2 of ../shared/notes/layout.md).
TOP_ONLY = ("compress.cli", "compress.pipeline")


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in packages:
        for f in sorted((root / top).rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = f
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (module level, functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def resolve(mod: str) -> str | None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [resolve(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else resolve(base) for a in node.names]
        else:
            continue
        out |= {t for t in targets if t and t != name}
    return out


def graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def layer_of(module: str) -> tuple[str, int]:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its prefix to LAYERS in tests/test_layout.py")
    return best, dict(LAYERS)[best]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        s_prefix, s_rank = layer_of(src)
        for dst in sorted(targets):
            d_prefix, d_rank = layer_of(dst)
            if d_rank > s_rank:
                bad.append(f"{src} ({s_prefix}, {s_rank}) imports {dst} ({d_prefix}, {d_rank}): upward")
            elif any(_under(src, a) and _under(dst, b) for a, b in FORBIDDEN):
                bad.append(f"{src} imports {dst}: forbidden pair")
            elif any(_under(dst, top) for top in TOP_ONLY) and not any(_under(src, top) for top in TOP_ONLY) \
                    and not _under(src, "bench") and src != "compress":
                bad.append(f"{src} imports {dst}: only the CLI and bench/ may import the pipeline")
    return bad


def test_no_import_circle() -> None:
    found = cycles(graph())
    assert found == [], "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_every_import_points_down() -> None:
    bad = violations(graph())
    assert bad == [], "\n".join(bad)


def test_the_checks_catch_a_planted_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a circle closed inside a function, and a library module importing the pipeline."""
    pkg = tmp_path / "compress"
    (pkg / "pipeline").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline" / "__init__.py").write_text("")
    (pkg / "pipeline" / "run.py").write_text("from compress.errors import UserError\n")
    (pkg / "errors.py").write_text("def f():\n    from compress.atomic import write_json\n")
    (pkg / "atomic.py").write_text("def g():\n    from compress import errors\n")
    (pkg / "model.py").write_text("def h():\n    from compress.pipeline.run import x\n")
    g = graph(tmp_path, ("compress",))
    assert cycles(g) == [["compress.atomic", "compress.errors"]]
    bad = violations(g)
    assert any(b.startswith("compress.model ") and "imports compress.pipeline.run" in b for b in bad), bad


def test_the_cli_only_parses_and_calls() -> None:
    """compress/cli.py imports no library internals beyond what parsing needs: the work is in pipeline/ and
    mobile_export/ (each command calls one function there)."""
    allowed = ("compress.pipeline", "mobile_export", "compress.errors", "compress.quant.schemes", "compress.recipe",
               "compress.progress")
    g = graph()
    extra = sorted(m for m in g["compress.cli"] if not any(_under(m, a) for a in allowed))
    assert extra == [], f"compress/cli.py reaches past the pipeline into: {extra}"
