"""A run's report: `report.json` (machine-readable), `report.md` (for people) and `zero_shot.png`, in runs/<name>/."""
from __future__ import annotations

from pathlib import Path

from compress.atomic import atomic_path, write_json, write_text
from compress.pipeline.data import RunData
from compress.progress import log
from compress.recipe.schema import EVAL_SPLITS

ORDER = ["teacher", "student_fp32", "student_int8", "student_fp32_pte", "student_int8_pte"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def label_sets(data: RunData) -> dict[str, list[str]]:
    """Label sets the student's vocabulary must spell, per language: the run's own label set (every emoji-zh-en
    class, what its bundle embeds: `emoji_labels`), ELEVATER's class names (compress/eval_data/) and the names of the
    unseen split's classes."""
    from compress.eval.elevater import elevater_datasets
    from mobile_export.bundle.labels import emoji_labels

    labels = emoji_labels()
    sets: dict[str, list[str]] = {f"labels_{lang}": [getattr(label, lang) for label in labels] for lang in ("en", "zh")}
    for lang in ("en", "zh"):
        sets[f"elevater_{lang}"] = sorted({n for ds in elevater_datasets().values() for n in ds.classes[lang]})
    unseen = data.eval_splits.get("unseen")
    if unseen is not None:
        for lang in ("en", "zh"):
            sets[f"unseen_{lang}"] = [data.names[lang][c] for c in unseen.class_ids if c in data.names.get(lang, {})]
    return sets


def vocabulary_coverage(tokenizer, data: RunData, inventory: str) -> dict:
    """The vocabulary's size and its [UNK] rates on the held-out label sets (issue 17: 0% for characters in the
    inventory)."""
    from compress.tokenizer import inventory_tokens

    inv, norm = set(inventory_tokens(inventory)), tokenizer.tokenizer.normalizer
    out: dict = {"size": tokenizer.vocab_size, "inventory": inventory, "unk": {}}
    for name, texts in label_sets(data).items():
        row = tokenizer.unknown_rate(texts)
        row["texts_outside_inventory"] = sum(any(not c.isspace() and c not in inv for c in norm.normalize_str(t))
                                             for t in texts)
        out["unk"][name] = row
    return out


def build_report(state, data: RunData, results: dict, exported, tokenizer=None, role: str | None = None) -> dict:
    """`role` "reference_teacher": this run trains the reference teacher (its `student_fp32` is the teacher)."""
    eval_split = data.eval_splits.get("eval")
    report = {
        "name": state.recipe.name,
        **({"role": role} if role else {}),
        "recipe": state.recipe.model_dump(),
        "data": {
            "source": data.source,
            "classes": len(eval_split.class_ids) if eval_split is not None else 0,
            "skipped": int(sum(data.skipped.values())),
            "skipped_by_reason": data.skipped,
            "used": len(data.train),
            "strict_subset_of_teacher_data": not getattr(state, "teacher_data", []),
            "not_subset_because": getattr(state, "teacher_data", []),
            "splits": {k: {"images": len(v), "classes": len(v.class_ids)} for k, v in data.eval_splits.items()},
            **({"world": {"students": len(data.world.students), "teacher_only": len(data.world.teacher_only),
                          "unseen": len(data.world.unseen)}} if getattr(data, "world", None) is not None else {}),
        },
        "models": {k: results[k] for k in ORDER if k in results} | {k: v for k, v in results.items() if k not in ORDER},
        "timings_s": state.timings,
        "training": state.history,
    }
    if tokenizer is not None:
        report["vocabulary"] = vocabulary_coverage(tokenizer, data, state.recipe.students.text.inventory)
    if exported is not None and exported.files:
        report["artifacts"] = {q: {t: str(p) for t, p in d.items()} for q, d in exported.files.items()}
    report["checks"] = acceptance_checks(report)
    return report


def acceptance_checks(report: dict) -> dict:
    """The headline claims, computed from the numbers above so a reader can trust one line."""
    m = report["models"]
    checks: dict = {}
    t, q = m.get("teacher"), m.get("student_int8_pte")
    if t and q and "eval" in t["zero_shot"] and "eval" in q["zero_shot"]:
        for lang in ("en", "zh"):
            tt, qq = t["zero_shot"]["eval"][lang]["top1"], q["zero_shot"]["eval"][lang]["top1"]
            checks[f"int8_pte_keeps_teacher_top1_{lang}"] = round(qq / tt, 4) if tt else None
    if t and m.get("student_fp32"):
        checks["student_to_teacher_params"] = round(m["student_fp32"]["params"] / t["params"], 4)
    f, q = m.get("student_fp32_pte"), m.get("student_int8_pte")
    if f and q and "pte_bytes" in f and "pte_bytes" in q:
        checks["int8_to_fp32_pte_bytes_total"] = round(sum(q["pte_bytes"].values()) / sum(f["pte_bytes"].values()), 4)
        for tower in f["pte_bytes"]:
            checks[f"int8_to_fp32_pte_bytes_{tower}"] = round(q["pte_bytes"][tower] / f["pte_bytes"][tower], 4)
            checks[f"int8_speedup_{tower}"] = round(f["latency_ms"][tower] / q["latency_ms"][tower], 3)
    rows = {r["scheme"]: r for r in scheme_rows(report)}
    if "fp32" in rows and "int8" in rows:
        for lang in ("en", "zh"):
            if rows["fp32"][f"eval_{lang}"] is None or rows["int8"][f"eval_{lang}"] is None:
                continue  # the `eval` split was not scored (eval.splits without it)
            drop = rows["fp32"][f"eval_{lang}"] - rows["int8"][f"eval_{lang}"]
            checks[f"int8_pte_eval_top1_drop_vs_fp32_pte_points_{lang}"] = round(100 * drop, 2)
            if "ptq-int8" in rows:
                checks[f"int8_qat_beats_ptq_int8_{lang}"] = rows["int8"][f"eval_{lang}"] > rows["ptq-int8"][f"eval_{lang}"]
    return checks


def scheme_rows(report: dict) -> list[dict]:
    """One row per exported precision (fp32 and every quantization scheme): .pte MB, host median ms, `eval` top-1."""
    rows = []
    for key, v in report["models"].items():
        if not (key.startswith("student_") and key.endswith("_pte") and "pte_bytes" in v):
            continue
        ev = v.get("zero_shot", {}).get("eval", {})
        rows.append({
            "scheme": key.removeprefix("student_").removesuffix("_pte"),
            "image_mb": v["pte_bytes"].get("image", 0) / 1e6, "text_mb": v["pte_bytes"].get("text", 0) / 1e6,
            "image_ms": v["latency_ms"].get("image"), "text_ms": v["latency_ms"].get("text"),
            "eval_en": ev.get("en", {}).get("top1"), "eval_zh": ev.get("zh", {}).get("top1"),
        })
    return rows


def render_schemes(report: dict) -> list[str]:
    """The quantization comparison: fp32, PTQ and each QAT scheme side by side (sizes relative to fp32)."""
    rows = scheme_rows(report)
    if len(rows) < 2:
        return []
    base = next((r for r in rows if r["scheme"] == "fp32"), None)
    lines = ["", "## Quantization schemes (.pte through the ExecuTorch runtime, XNNPACK, host)", "",
             "| scheme | image MB (x fp32) | text MB (x fp32) | image ms | text ms | eval top-1 en / zh % | vs fp32 (points) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = lambda t: f" ({r[f'{t}_mb'] / base[f'{t}_mb']:.3f})" if base and base[f"{t}_mb"] else ""
        ms = lambda t: "–" if r[f"{t}_ms"] is None else f"{r[f'{t}_ms']:.2f}"
        delta = "–"
        if base and r["eval_en"] is not None and base["eval_en"] is not None:
            delta = " / ".join(f"{100 * (r[f'eval_{l}'] - base[f'eval_{l}']):+.1f}" for l in ("en", "zh"))
        lines.append(f"| `{r['scheme']}` | {r['image_mb']:.3f}{rel('image')} | {r['text_mb']:.3f}{rel('text')} | "
                     f"{ms('image')} | {ms('text')} | {_pct(r['eval_en'])} / {_pct(r['eval_zh'])} | {delta} |")
    configs = [k for k, v in report["models"].items() if "quantization" in v]
    if configs:
        lines += ["", "Exact quantization configs (torchao / PT2E, as JSON): `report.json` → "
                  + ", ".join(f"`models.{k}.quantization`" for k in configs) + "."]
    return lines


def render_vocabulary(report: dict) -> list[str]:
    v = report.get("vocabulary")
    if not v:
        return []
    lines = ["", f"## Vocabulary: {v['size']} tokens, inventory `{v['inventory']}` ([UNK] on label sets, per language)", "",
             "| label set | names | names with [UNK] | characters in [UNK] | names with a character outside the inventory |",
             "|---|---|---|---|---|"]
    for name, r in v["unk"].items():
        lines.append(f"| {name} | {r['texts']} | {r['texts_with_unk']} ({r['text_unk_rate']:.1%}) | "
                     f"{r['char_unk_rate']:.2%} | {r['texts_outside_inventory']} |")
    lines += ["", "`labels_*`: the run's own label set (every emoji-zh-en class, the names its bundle embeds); "
              "`elevater_*`: ELEVATER's class names; `unseen_*`: the unseen split's class names. Characters in [UNK]: "
              "the share of a set's non-space characters that fall inside an [UNK] token."]
    return lines


def render_margin(report: dict) -> list[str]:
    """The positive-pair term's activity at each contrastive stage's last epoch (compress/train/align.py records
    it per batch, averaged over the epoch): mean positive cosine, share of positives the term pushes, batch margin."""
    rows = []
    for stage, h in report.get("training", {}).items():
        last = (h.get("epoch_parts") or [{}])[-1]
        if any(f"pos_cos_{lang}" in last for lang in ("en", "zh")):
            cell = lambda key: " / ".join("–" if f"{key}_{l}" not in last else f"{last[f'{key}_{l}']:.3f}"
                                          for l in ("en", "zh"))
            rows.append(f"| {stage} | {cell('pos_cos')} | {cell('margin_active')} | {cell('batch_margin')} |")
    if not rows:
        return []
    a = report.get("recipe", {}).get("align", {})
    weight = a.get("margin_reg", 0.0)
    return ["", "## Positive-pair term (last epoch, mean over its batches)", "",
            f"Form `{a.get('margin_form', 'hinge')}`, weight {weight}{' (off: recorded only)' if not weight else ''}, "
            f"margin {a.get('margin', 0.5)} (hinge only). Batch margin: min_i (s_ii − max_j≠i s_ij), cosines, image i against the batch's captions.", "",
            "| stage | positive cosine en / zh | share active en / zh | batch margin en / zh |", "|---|---|---|---|",
            *rows]


def render_markdown(report: dict) -> str:
    m = report["models"]
    splits = [s for s in EVAL_SPLITS if any(s in v.get("zero_shot", {}) for v in m.values())]
    lines = [f"# Run `{report['name']}`", ""]
    if report.get("role") == "reference_teacher":
        lines += ["This run trains the reference teacher: the model `student_fp32` below is the teacher that student "
                  "runs distil from (labelled `teacher` in the plots).", ""]
    d = report["data"]
    lines += [f"Data: {d['source']} — {d['used']} training samples, {d['classes']} classes in `eval`, {d['skipped']} skipped.", ""]
    if "world" in d:
        w = d["world"]
        lines += [f"World (data.split_seed): {w['students']} classes S (the students' pairs, `eval`), {w['teacher_only']} "
                  f"K (the teacher's pairs only, `known`), {w['unseen']} U (nobody's, `unseen` and its strata). Chance "
                  f"on `unseen` is {100 / max(1, w['unseen']):.2f}%.", ""]
    head = "| model | params | " + " | ".join(f"{s} en top1 / top5 | {s} zh top1 / top5" for s in splits) + " |"
    lines += ["## Zero-shot accuracy (%)", "", head, "|" + "---|" * (2 + 2 * len(splits))]
    for name, v in m.items():
        row = [f"`{name}`", f"{v['params'] / 1e6:.2f}M"]
        for s in splits:
            for lang in ("en", "zh"):
                r = v.get("zero_shot", {}).get(s, {}).get(lang)
                row.append(f"{_pct(r['top1'])} / {_pct(r['top5'])}" if r else "–")
        lines.append("| " + " | ".join(row) + " |")
    pte = {k: v for k, v in m.items() if "pte_bytes" in v}
    if pte:
        lines += ["", "## On-device artifacts (host latency through the ExecuTorch runtime, XNNPACK)", "",
                  "| model | tower | .pte MB | median ms | trimmed mean ms | load ms | ops left outside the delegate |",
                  "|---|---|---|---|---|---|---|"]
        for name, v in pte.items():
            for tower, size in v["pte_bytes"].items():
                lat = v["latency"][tower]
                left = v.get("delegation", {}).get(tower, {}).get("non_delegated_ops", {})
                left_s = ", ".join(f"{op}×{n}" for op, n in sorted(left.items(), key=lambda x: -x[1])[:6]) or "none"
                share = v.get("delegation", {}).get(tower, {}).get("time", {}).get("non_delegated_share")
                left_s += f" ({share:.1%} of the time, ETDump)" if share is not None else ""
                lines.append(
                    f"| `{name}` | {tower} | {size / 1e6:.2f} | {lat['median_inference_latency(ms)']:.2f} | "
                    f"{lat['trimmean_inference_latency(ms)']:.2f} | {lat['model_load_time(ms)']:.1f} | {left_s} |")
    vela = {k: v for k, v in m.items() if v.get("vela")}
    for name, v in vela.items():  # Arm Ethos-U: compiler estimate (nothing runs it here) beside the host latency
        npus = list(v["vela"])
        lines += ["", "## Edge NPU: Arm Ethos-U (Vela estimate, int8 with the Arm quantizer) beside the host", "",
                  "| tower | host XNNPACK median ms | " + " | ".join(f"{n} ms (cycles)" for n in npus) + " |",
                  "|---|---|" + "---|" * len(npus)]
        for tower, lat in v.get("latency", {}).items():
            cells = [f"{v['vela'][n][tower]['median_inference_latency(ms)']:.3f} ({v['vela'][n][tower]['npu_cycles']:.0f})"
                     for n in npus]
            lines.append(f"| {tower} | {lat['median_inference_latency(ms)']:.2f} | " + " | ".join(cells) + " |")
    lines += render_schemes(report)
    lines += render_vocabulary(report)
    if report.get("checks"):
        lines += ["", "## Checks", ""] + [f"- `{k}`: {v}" for k, v in report["checks"].items()]
    lines += ["", "## Stage timings (s)", ""] + [f"- {k}: {v}" for k, v in report["timings_s"].items()]
    tr = report.get("training", {})
    if tr:
        lines += ["", "## Training loss per epoch", ""]
        lines += [f"- {k}: " + ", ".join(f"{x:.3f}" for x in v.get("epoch_loss", [])) for k, v in tr.items()]
    lines += render_margin(report)
    lines += ["", "## Zero-shot top-1 (%) by split and prompt language", "",
              "![zero-shot top-1 (%): colour is the precision, hatched bars the .pte programs](zero_shot.png)", "",
              ("Below it: each quantized model against the fp32 model it was made from, in points. "
               if quantization_deltas(report) else "") + "Machine-readable: `report.json`.", ""]
    return "\n".join(lines)


def model_label(report: dict, name: str) -> str:
    """What a chart calls the model `name`: its key in the tables, except the reference teacher's own run, whose
    `student_fp32` is the teacher."""
    if report.get("role") == "reference_teacher" and name == "student_fp32":
        return "teacher (this run's student_fp32)"
    return name


def precision(name: str) -> str:
    """`fp32`, `int8`, `ptq-int8`, ... of a model key (`student_<precision>[_pte]`); `teacher` for the teacher."""
    return name.removeprefix("student_").removesuffix("_pte") if name.startswith("student_") else name


QUANT_COLOURS = ["C1", "C2", "C4", "C5", "C6", "C8", "C9", "C3"]  # C0: fp32, grey: the teacher


def quantization_deltas(report: dict) -> dict[str, tuple[str, str]]:
    """Each quantized model beside the fp32 model it was made from (eager against eager, .pte against .pte):
    label -> (quantized key, fp32 key)."""
    m = report["models"]
    out = {}
    for name in m:
        p = precision(name)
        if name.startswith("student_") and p != "fp32":
            base = "student_fp32_pte" if name.endswith("_pte") else "student_fp32"
            if base in m:
                out[f"{name} − {base}"] = (name, base)
    return out


def plot(report: dict, path: Path):
    """zero_shot.png: top-1 in % per (split, language) and model (colour: precision, hatched: the .pte programs),
    and below it each quantized model against its fp32 model in points. Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = report["models"]
    splits = [s for s in EVAL_SPLITS if any(s in v.get("zero_shot", {}) for v in m.values())]
    bars = [(s, lang) for s in splits for lang in ("en", "zh")]
    top1 = lambda name, s, lang: 100 * m[name].get("zero_shot", {}).get(s, {}).get(lang, {}).get("top1", float("nan"))
    deltas = {k: v for k, v in quantization_deltas(report).items() if any(
        s in m[v[0]].get("zero_shot", {}) for s in splits)}
    precisions = list(dict.fromkeys(precision(n) for n in m if n.startswith("student_") and precision(n) != "fp32"))
    colour = lambda name: ("0.5" if model_label(report, name).startswith("teacher") else "C0" if precision(name) == "fp32"
                           else QUANT_COLOURS[precisions.index(precision(name)) % len(QUANT_COLOURS)])
    hatch = lambda name: "//" if name.endswith("_pte") else None
    rows = 2 if deltas else 1
    fig, axes = plt.subplots(rows, 1, figsize=(max(6, 1.6 * len(bars)) + 2.5, 4.2 + 2.4 * (rows - 1)), squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1][:rows]}, sharex=True)
    ax = axes[0][0]
    width = 0.8 / max(1, len(m))
    for i, name in enumerate(m):
        ax.bar([j + i * width for j in range(len(bars))], [top1(name, s, lang) for s, lang in bars], width,
               label=model_label(report, name), color=colour(name), hatch=hatch(name), edgecolor="white", linewidth=0.3)
    ax.set_ylabel("zero-shot top-1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    who = " (the reference teacher)" if report.get("role") == "reference_teacher" else ""
    how = "; colour: precision, hatched: .pte through the ExecuTorch runtime" if any(n.endswith("_pte") for n in m) else ""
    ax.set_title(f"{report['name']}{who}: zero-shot top-1 (%)\nby split and prompt language{how}", fontsize=10)
    if deltas:
        dax = axes[1][0]
        dwidth = 0.8 / len(deltas)
        for i, (label, (q, base)) in enumerate(deltas.items()):
            dax.bar([j - width / 2 + (i + 0.5) * dwidth for j in range(len(bars))],  # centred under the group
                    [top1(q, s, lang) - top1(base, s, lang) for s, lang in bars], dwidth, label=label,
                    color=colour(q), hatch=hatch(q), edgecolor="white", linewidth=0.3)
        dax.axhline(0, color="0.3", lw=0.8)
        dax.set_ylabel("quantized − fp32\n(points)")
        dax.grid(axis="y", alpha=0.3)
        dax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    bottom = axes[-1][0]
    bottom.set_xticks([j + 0.4 - width / 2 for j in range(len(bars))], [f"{s}\n{lang}" for s, lang in bars])
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return fig


def stage_model(report: dict, stage: str) -> str:
    """The model a training stage trains, for its loss panel's title."""
    if stage in ("distill", "align"):
        if report.get("role") == "reference_teacher":
            return "teacher"
        return f"student fp32, stage {1 if stage == 'distill' else 2}"
    if stage == "qat" or stage.startswith("qat-"):
        from compress.errors import UserError
        from compress.quant.schemes import get_scheme

        name = report.get("recipe", {}).get("qat", {}).get("scheme", "int8") if stage == "qat" else stage[4:]
        try:
            then = get_scheme(name).then
        except UserError:  # a scheme of another version: its name is all there is
            then = None
        return f"student fp32 fine-tune, then {then}" if then else f"student {name}, QAT"
    return ""


def plot_losses(csv_path: Path, path: Path, report: dict | None = None):
    """Training loss of every stage from `logs/scalars.csv`, one panel per stage titled with the model it trains:
    each optimizer step faint, the mean of each epoch bold (the per-epoch numbers of the report, where it has
    them). Returns the (closed) figure; None without a log."""
    if not csv_path.is_file():
        return None
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float], list[int]]] = {}
    with csv_path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            steps, losses, epochs = series.setdefault(row["stage"], ([], [], []))
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
            epochs.append(int(row["epoch"]))
    if not series:
        return None
    report = report or {}
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.4), squeeze=False)
    for ax, (stage, (steps, losses, epochs)) in zip(axes[0], series.items()):
        by_epoch: dict[int, list[tuple[int, float]]] = {}
        for step, loss, epoch in zip(steps, losses, epochs):
            by_epoch.setdefault(epoch, []).append((step, loss))
        centres = [sum(s for s, _ in v) / len(v) for v in by_epoch.values()]
        means = [sum(x for _, x in v) / len(v) for v in by_epoch.values()]
        logged = report.get("training", {}).get(stage, {}).get("epoch_loss", [])
        if len(logged) == len(means):  # the loop's own epoch means (every micro-batch), as report.md lists them
            means = list(logged)
        ax.plot(steps, losses, lw=0.8, alpha=0.3, color="C0", label="per step")
        ax.plot(centres, means, lw=2, marker="o", ms=3, color="C0", label="epoch mean")
        model = stage_model(report, stage)
        ax.set_title(f"{stage} ({model})" if model else stage, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return fig


def write_report(state, data: RunData, results: dict, exported, tokenizer=None, teacher_folder: Path | None = None) -> Path:
    """`teacher_folder`: this run trains the reference teacher, and its folder is renamed to `teacher_folder` once
    the report is written: the report says so, and the path printed is the one that will exist."""
    report = build_report(state, data, results, exported, tokenizer, role="reference_teacher" if teacher_folder else None)
    out = state.out
    write_json(out / "report.json", report)
    text = render_markdown(report)
    if plot_losses(out / "logs" / "scalars.csv", out / "loss.png", report) is not None:
        text += ("\n## Training loss (each optimizer step faint, each epoch's mean bold)\n\n"
                 "![training loss per step and per epoch](loss.png)\n\n"
                 "Scalars: `logs/scalars.csv` (and TensorBoard: `tensorboard --logdir logs/tensorboard`).\n")
    write_text(out / "report.md", text)
    plot(report, out / "zero_shot.png")
    shown = Path(teacher_folder) if teacher_folder else out
    log(f"[bold green]report:[/] {shown / 'report.md'} (json: {shown / 'report.json'})")
    return out / "report.md"
