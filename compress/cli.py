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

from compress.errors import UserError


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; partial stage outputs were not written (rerun with --resume)", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dcclip-compress")
def main() -> None:
    """Distil a bilingual (zh + en) CLIP into small int8 students that run on phones (DC-CLIP method).

    Typical use: `dcclip-compress run recipes/mobilevit_int8.yaml`, then read runs/<name>/report.md.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
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
    from compress.pipeline import run_recipe
    from compress.recipe import load_recipe

    r = load_recipe(recipe, overrides)
    report = run_recipe(r, out, resume=resume)
    click.echo(f"report: {report}")


@main.command()
@click.argument("checkpoint_or_run", type=click.Path(path_type=Path))
@click.option("--target", default="xnnpack", show_default=True, help="Lowering target (see `dcclip-compress targets`).")
@click.option("--quant", type=click.Choice(["fp32", "int8"]), default="int8", show_default=True,
              help="int8 reuses the run's QAT .pte when present, else calibrates post-training on emoji-zh-en.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder for image_<quant>.pte, text_<quant>.pte, tokenizer.json, bundle.json "
                   "(default: <run>/export-<target>).")
@user_errors
def export(checkpoint_or_run: Path, target: str, quant: str, out: Path | None) -> None:
    """Lower a student checkpoint (or a run folder) to ExecuTorch .pte files for TARGET."""
    from compress.export_cmd import export_checkpoint

    for line in export_checkpoint(checkpoint_or_run, target, quant, out):
        click.echo(line)


@main.command(name="eval")
@click.argument("model")
@click.option("--splits", default="eval,transfer,unseen", show_default=True, help="Comma-separated emoji-zh-en splits.")
@click.option("--lang", default="en,zh", show_default=True, help="Prompt languages.")
@click.option("--image-size", type=click.IntRange(16, 512), default=None,
              help="Render size of the emoji splits (default: the run's recipe, else 64).")
@click.option("--limit", type=click.IntRange(8), default=None, help="Only the first N emoji classes (default: the run's recipe).")
@click.option("--unseen-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Held-out class fraction (default: the run's recipe, else 0.4 as in the shipped recipes).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def eval_(model: str, splits: str, lang: str, image_size: int | None, limit: int | None, unseen_fraction: float | None,
          as_json: bool) -> None:
    """Zero-shot top-1/top-5 of MODEL on emoji-zh-en, in English and Chinese.

    MODEL is a student checkpoint or run folder, an export folder or .pte (runs through the ExecuTorch runtime),
    `reference` (the cached reference teacher), or a Hugging Face CLIP-family hub id / local folder.
    """
    from compress.eval_cmd import evaluate_model, format_table

    result = evaluate_model(model, [s for s in splits.split(",") if s], [l for l in lang.split(",") if l],
                            image_size=image_size, limit=limit, unseen_fraction=unseen_fraction)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else format_table(model, result))


@main.command()
@click.argument("pte", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--runs", type=click.IntRange(1), default=20, show_default=True, help="Timed runs after warm-up.")
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True)
@user_errors
def bench(pte: Path, runs: int, warmup: int) -> None:
    """Host latency of a .pte through the ExecuTorch runtime (same field names as ExecuTorch's Android benchmark app)."""
    from compress.export_cmd import bench_pte

    click.echo(json.dumps(bench_pte(pte, runs, warmup), indent=2))


@main.command()
def targets() -> None:
    """List export targets and whether their backends are installed."""
    from mobile_export.targets import list_targets

    for name, status in list_targets().items():
        click.echo(f"{name}: {status}")


if __name__ == "__main__":
    main()
