"""`dcclip-compress`: run a recipe, export, evaluate and benchmark.

Every user mistake (bad recipe, unknown key, missing file, unreachable model id) ends as one line on stderr and
exit code 2; nothing else ever prints a traceback for them.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from compress.errors import UserError, one_line
from compress.quant.schemes import scheme_names

SCHEME_NAMES = scheme_names()  # `export --quant` choices: the quantization scheme registry


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            click.echo(f"error: {one_line(err)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; partial stage outputs were not written (rerun with --resume)", err=True)
            sys.exit(130)
        except Exception as err:  # noqa: BLE001 - a full disk, however the library that hit it wraps it
            full = disk_full(err)
            if full is None:
                raise
            click.echo(f"error: no space left on the disk{full}; free some space and run the same command again "
                       "(`run` continues with --resume; temporary files were removed)", err=True)
            sys.exit(2)

    return wrapper


def disk_full(err: BaseException) -> str | None:
    """' holding <file>' (or '') when `err`, or an exception it came from, is ENOSPC / EDQUOT: an OSError, or a
    library's wrapper of one (safetensors says `StorageFull` / 'No space left'); None otherwise."""
    import errno

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f" holding {e.filename}" if e.filename else ""
        if "No space left on device" in str(e) or "StorageFull" in str(e):
            return ""
        e = e.__cause__ or e.__context__
    return None


SUITES = ("elevater", "emoji", "retrieval")  # `eval --suite` choices (compress/pipeline/compare.py runs them; one list)


def parse_list(value: str | None, option: str, allowed=None) -> list[str]:
    """A comma-separated option -> its items; one line naming the option when an item is not allowed."""
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UserError(f"{option}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return items


def parse_suites(value: str) -> list[str]:
    items = parse_list(value, "--suite", SUITES + ("all",))
    if not items:
        raise UserError(f"--suite: give one of {', '.join(SUITES)} or all")
    return list(SUITES) if "all" in items else [s for s in SUITES if s in items]


class OneLineGroup(click.Group):
    """Click's usage errors (a bad option value, a missing argument) as one `error:` line and exit code 2, like every
    other mistake here, instead of a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exn:
            where = exn.ctx.command_path if exn.ctx is not None else "dcclip-compress"
            click.echo(f"error: {one_line(exn.format_message())} (see '{where} --help')", err=True)
            code = 2
        except click.ClickException as exn:
            click.echo(f"error: {one_line(exn.format_message())}", err=True)
            code = exn.exit_code
        except click.Abort:
            click.echo("aborted", err=True)
            code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dcclip-compress")
def main() -> None:
    """Distil a bilingual (zh + en) CLIP into small int8 students that run on phones (DC-CLIP method).

    Typical use: `dcclip-compress run recipes/mobilevit_int8.yaml`, then read runs/<name>/report.md.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))  # load_recipe says what is wrong with it, in one line
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value (YAML-parsed), e.g. --set align.epochs=2. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default: runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue a run: stages whose artifacts exist in the run folder are skipped.")
@user_errors
def run(recipe: Path, overrides: tuple[str, ...], out: Path | None, resume: bool) -> None:
    """Run RECIPE end to end: data, teacher, stage 1 distill, stage 2 align, int8 QAT, export, eval, report.

    Writes runs/<name>/report.md, report.json, zero_shot.png, the fp32 checkpoint (student_fp32/, safetensors)
    and the .pte files (export/). The reference teacher is trained once and cached in .cache/teachers/.
    """
    from compress.recipe import load_recipe

    r = load_recipe(recipe, overrides)  # every recipe mistake is reported before the (slow) pipeline import
    from compress.pipeline.run import run_recipe

    report = run_recipe(r, out, resume=resume)
    click.echo(f"report: {report}")


@main.command()
@click.argument("checkpoint_or_run", type=click.Path(path_type=Path), required=False)
@click.option("--target", default="xnnpack", show_default=True, help="Lowering target (see `dcclip-compress targets`).")
@click.option("--quant", type=click.Choice(SCHEME_NAMES), default=None,
              help="Quantization scheme (compress/quant/schemes.py; default: int8, or the target's own default: fp32, "
                   "i.e. float16 compute, for coreml). A quantized scheme reuses the run's .pte of it when present, "
                   "else quantizes post-training, calibrated on the run's own training split.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Bundle folder (default: <run>/export-<target>): image_<quant>.pte, text_<quant>.pte, their "
                   "BundledPrograms (.bpte), tokenizer.json, preprocess.json, labels.json + label embeddings, "
                   "bundle.json, manifest.json.")
@click.option("--labels", "labels", default=None, metavar="FILE_OR_LIST",
              help="Label set to precompute embeddings for: a .jsonl ({\"en\": ..., \"zh\": ...} per line, either may "
                   "be missing), .tsv (header with an en and/or a zh column) or .txt (one name per line) file, or a "
                   "comma-separated list (dog,cat,狗). Default: the emoji classes.")
@click.option("--template", "templates", multiple=True, metavar="T",
              help="Prompt template with one {} for the labels, e.g. 'a photo of a {}.' or '{}的照片' (its language "
                   "is detected; repeat for an ensemble). Default: the templates of the data the run trained on.")
@user_errors
def export(checkpoint_or_run: Path | None, target: str, quant: str | None, out: Path | None, labels: str | None,
           templates: tuple[str, ...]) -> None:
    """Lower a student checkpoint (or a run folder; default: the newest finished run) to an app-ready ExecuTorch
    bundle for TARGET.

    One .pte per tower (an app that only classifies images ships the image tower and the label embeddings).
    Check the folder later, or after copying it to a phone, with `dcclip-compress verify BUNDLE`.
    """
    from compress.pipeline.export import export_checkpoint

    export_checkpoint(checkpoint_or_run, target, quant, out, labels=labels, say=click.echo, templates=templates)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path), metavar="[FOLDER]", required=False)
@user_errors
def verify(bundle: Path | None) -> None:
    """Check an export bundle or a teacher-feature cache FOLDER against its manifest.json. A bundle: every file (size,
    sha256), each BundledProgram's samples through the ExecuTorch runtime, and the label embeddings against the text
    program. A teacher cache: every shard's size, header and sha256. Exit 2 on any mismatch."""
    from compress.pipeline.verify import verify_folder

    if bundle is None:
        from compress.pipeline.refs import latest_bundle

        bundle = latest_bundle("verify")
        click.echo(f"verify: the newest finished run's bundle, {bundle}")
    for line in verify_folder(bundle):
        click.echo(line)
    click.echo(f"ok: {bundle}")


@main.command(name="eval")
@click.argument("models", nargs=-1, metavar="MODEL [MODEL ...]")
@click.option("--suite", default="emoji", show_default=True, help="elevater, emoji, retrieval, or all (comma-separated).")
@click.option("--lang", default="en,zh", show_default=True, help="Prompt / caption languages.")
@click.option("--datasets", default=None, help="ELEVATER datasets to run (comma-separated keys; default: all 20).")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding one sub-folder per ELEVATER dataset (default: $DCCLIP_DATA, else data/elevater). "
                   "Missing datasets are reported as skipped.")
@click.option("--manifest", "manifests", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Retrieval JSONL manifest ({\"image\", \"en\": [...], \"zh\": [...]} per line). Repeatable.")
@click.option("--splits", default="eval,transfer,unseen", show_default=True, help="Comma-separated emoji-zh-en splits.")
@click.option("--image-size", type=click.IntRange(16, 512), default=None,
              help="Render size of the emoji splits (default: the run's recipe, else 64).")
@click.option("--limit", type=click.IntRange(8, 1_000_000), default=None,
              help="Only the first N emoji classes, 8..1000000 (default: the run's recipe).")
@click.option("--unseen-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Held-out emoji class fraction (default: the run's recipe, else 0.4 as in the shipped recipes).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder for eval.md, eval.json, eval.png (default: runs/eval/<first model label>).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of the table.")
@user_errors
def eval_(models: tuple[str, ...], suite: str, lang: str, datasets: str | None, data_root: Path | None,
          manifests: tuple[Path, ...], splits: str, image_size: int | None, limit: int | None,
          unseen_fraction: float | None, batch_size: int, out: Path | None, as_json: bool) -> None:
    """Zero-shot classification and retrieval of one or more MODELs, in English and Chinese side by side.

    MODEL is a student checkpoint or run folder, an export folder or .pte (runs through the ExecuTorch runtime),
    RUN/teacher (the teacher that run distilled from), `reference` (the cached reference teacher), or a Hugging Face
    CLIP-family hub id / local folder. Name a column with label=MODEL; the first MODEL is the baseline the others are
    compared against. Suites: elevater (20 ELEVATER datasets from --data-root), emoji (emoji-zh-en splits),
    retrieval (emoji eval split plus every --manifest).

    Example: dcclip-compress eval teacher=reference fp32=runs/mobilevit_int8 int8=runs/mobilevit_int8/export --suite all
    """
    from compress.pipeline.compare import compare_models

    result, table, paths = compare_models(
        list(models), parse_suites(suite), parse_list(lang, "--lang"), datasets=parse_list(datasets, "--datasets") or None,
        data_root=data_root, manifests=manifests, splits=parse_list(splits, "--splits"), image_size=image_size,
        limit=limit, unseen_fraction=unseen_fraction, batch_size=batch_size, out=out,
    )
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else table)
    click.echo("report: " + ", ".join(str(p) for p in paths.values()), err=as_json)


@main.command()
@click.argument("ref", metavar="REF")
@click.argument("images", nargs=-1, required=True, metavar="IMAGES_OR_FOLDER...")
@click.option("--labels", default=None, metavar="FILE_OR_LIST",
              help="Labels: a .tsv / .jsonl / .txt file or a comma-separated list (dog,cat,狗); a label may have one "
                   "language. Default: an export bundle's own label set.")
@click.option("--template", "templates", multiple=True, metavar="T",
              help="Prompt template with one {} (language detected; repeatable). Default: the model's templates.")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True, help="Labels shown per image.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default=None,
              help="Score one language's names only (default: both, ensembled).")
@click.option("--quant", default=None, help="A bundle's programs to run (default: int8 when it has them, else fp32).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of one line per image.")
@user_errors
def classify(ref: str, images: tuple[str, ...], labels: str | None, templates: tuple[str, ...], top_k: int,
             lang: str | None, quant: str | None, as_json: bool) -> None:
    """Zero-shot classify IMAGES (files, or folders searched recursively) with REF: a run folder, a checkpoint folder
    or an export bundle (its .pte programs run through the ExecuTorch runtime).

    Example: dcclip-compress classify runs/mobilevit_int8/export photos/ --labels dog,cat,狗,猫 --top-k 3
    """
    from compress.pipeline.api import classify_command

    results = classify_command(ref, images, labels, templates, top_k, lang, quant, say=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for row in results:
        top = "  ".join(f"{' / '.join(t[k] for k in ('en', 'zh') if k in t)} {100 * t['score']:.1f}%" for t in row["top"])
        click.echo(f"{row['image']}: {top}")


@main.command()
@click.argument("ref", metavar="REF", required=False)
@click.option("--images", multiple=True, metavar="PATH", help="Image files or folders (repeatable).")
@click.option("--texts", multiple=True, metavar="TEXT", help="Texts, or .txt files with one text per line (repeatable).")
@click.option("--lang", type=click.Choice(["en", "zh"]), default=None,
              help="The texts are label names in this language: wrap them in the model's templates (default: as written).")
@click.option("--quant", default=None, help="A bundle's programs to run (default: int8 when it has them, else fp32).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="FILE.npy: (N, D) float32 L2-normalised rows; FILE.json beside it lists the inputs in row order.")
@user_errors
def embed(ref: str | None, images: tuple[str, ...], texts: tuple[str, ...], lang: str | None, quant: str | None,
          out: Path) -> None:
    """Embed images or texts with REF (a run, checkpoint or export bundle; default: the newest finished run), for
    search or clustering: cosine similarity is the dot product of two rows."""
    from compress.pipeline.api import embed_command

    path, shape = embed_command(ref, images, texts, lang, quant, out, say=lambda m: click.echo(m, err=True))
    click.echo(f"embeddings: {path} ({shape[0]} x {shape[1]}), index: {path.with_suffix('.json')}")


@main.command()
@click.argument("bundle_or_pte", type=click.Path(path_type=Path), required=False, metavar="[BUNDLE_OR_PTE]")
@click.option("--device", default="host", show_default=True, metavar="host|adb[:SERIAL]|vela",
              help="Where to time it: this host's ExecuTorch runtime, a phone over adb (ExecuTorch's minibench app), "
                   "or vela: the Arm Ethos-U compiler's estimate stored in an ethos-u55/u85 export.")
@click.option("--runs", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="Timed runs after warm-up, 1..100000.")
@click.option("--warmup", type=click.IntRange(0, 10_000), default=3, show_default=True, help="Untimed runs, 0..10000.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Runtime threadpool size, 1..1024 (default: one per core).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder for bench.json, bench.md, bench.png (default: runs/bench/<bundle or .pte name>).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the markdown table.")
@click.option("--demo", is_flag=True,
              help="With --device adb[:SERIAL]: time the bundle inside the Android demo app (android_demo/, "
                   "org.dcclip.demo; the int8 image and text programs it loads, pushed to it first) instead of "
                   "ExecuTorch's minibench.")
@user_errors
def bench(bundle_or_pte: Path, device: str, runs: int, warmup: int, threads: int | None, out: Path | None,
          as_json: bool, demo: bool) -> None:
    """Latency of an export bundle (every program in it) or of any .pte: load time, median, p90 and trimmed-mean
    latency per method, peak RSS, the ETDump top ops and the device, with ExecuTorch benchmark-app field names.

    Inputs are all-ones tensors of the shapes and dtypes the program declares, as the benchmark app feeds them.
    """
    from mobile_export.bench.report import bench_and_report, markdown

    if bundle_or_pte is None:
        from compress.pipeline.refs import latest_bundle

        bundle_or_pte = latest_bundle("bench")
        click.echo(f"bench: the newest finished run's bundle, {bundle_or_pte}", err=True)
    if demo:  # the demo app's own benchmark (mobile_export/bench/adb.py run_adb_demo)
        from mobile_export.bench.run import demo_device

        device = demo_device(device, bundle_or_pte, threads)
    report, paths = bench_and_report(bundle_or_pte, device, runs=runs, warmup=warmup, threads=threads, out=out)
    click.echo(json.dumps(report.model_dump(by_alias=True, mode="json"), indent=2) if as_json else markdown(report))
    click.echo("report: " + ", ".join(str(p) for p in paths.values()), err=as_json)


@main.command()
def targets() -> None:
    """List export targets and whether their backends are installed."""
    from mobile_export.lower.targets import list_targets

    for name, status in list_targets().items():
        click.echo(f"{name}: {status}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))  # load_recipe says what is wrong with it, in one line
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value (YAML-parsed), e.g. --set search.budget.image.factor=1.2. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Search folder (default: runs/<recipe name>/search).")
@user_errors
def search(recipe: Path, overrides: tuple[str, ...], out: Path | None) -> None:
    """Search student architectures under RECIPE's `search:` latency budget (measured int8 XNNPACK latency, short
    distillation proxy, successive halving).

    Writes candidates.jsonl, pareto.md, pareto.png, summary.json and best.yaml (the recipe with the winners filled
    in: train it with `dcclip-compress run .../best.yaml`). Latency measurements are cached in .cache/latency/.
    """
    from compress.recipe import load_recipe

    r = load_recipe(recipe, overrides)  # every recipe mistake is reported before the (slow) imports
    from compress.pipeline.run import search as search_recipe

    paths, _ = search_recipe(r, out)
    click.echo("search: " + ", ".join(str(p) for p in paths.values()))


@main.command(name="cache-teacher")
@click.argument("recipe", type=click.Path(path_type=Path))  # load_recipe says what is wrong with it, in one line
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value (YAML-parsed), e.g. --set teacher.dtype=bf16. Repeatable.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Cache folder (default: teacher.cache from the recipe, else .cache/teacher-features/<name>-<fingerprint>).")
@click.option("--views", type=click.IntRange(1, 1024), default=None,
              help="Augmented views per sample, 1..1024 (default: teacher.cache_views).")
@click.option("--batch-size", type=click.IntRange(1, 65_536), default=64, show_default=True,
              help="Keys per teacher forward pass, 1..65536.")
@user_errors
def cache_teacher(recipe: Path, overrides: tuple[str, ...], out: Path | None, views: int | None, batch_size: int) -> None:
    """Run RECIPE's teacher once over K augmented views of every training sample and store its stage-1 targets.

    fp16 features in sharded safetensors files plus manifest.json; a partial cache resumes where it stopped, a complete
    one is checked (sha256) and kept. Stage 1 then trains from it with teacher.cache=FOLDER and no teacher in memory.
    """
    from compress.recipe import load_recipe

    r = load_recipe(recipe, overrides)  # every recipe mistake is reported before the (slow) imports
    from compress.pipeline.cache_teacher import build_recipe_cache, human_size

    folder, manifest = build_recipe_cache(r, out, views, batch_size)
    click.echo(f"teacher cache: {folder} ({human_size(manifest['bytes'])}, {manifest['samples']} samples x "
               f"{manifest['views']} views, {len(manifest['shards'])} shards)")
    if r.teacher.cache != str(folder) or r.teacher.cache_views != manifest["views"]:
        click.echo(f"train from it: --set teacher.cache={folder} --set teacher.cache_views={manifest['views']}")


if __name__ == "__main__":
    main()
