"""The eval report is a pure function of the result dict: en/zh side by side, deltas vs the first model, ELEVATER
mean row, skipped datasets, torchvision caveats."""
from compress.eval.report import markdown, result_rows, write_report


def result():
    def ds(metric, en, zh, **extra):
        return {"metric": metric, "n": 10, "layout": "jsonl", "en": {"score": en}, "zh": {"score": zh}, **extra}

    return {
        "models": [{"label": "teacher", "params": 13_940_000, "image_size": 224},
                   {"label": "int8", "params": 1_900_000, "image_size": 64}],
        "langs": ["en", "zh"], "data_root": "data/elevater",
        "results": {"elevater": {
            "teacher": {"cifar-10": ds("accuracy", 0.9, 0.8), "eurosat_clip": ds(
                "accuracy", 0.5, 0.4, layout="torchvision.EuroSAT", warning="full 27000-image set")},
            "int8": {"cifar-10": ds("accuracy", 0.7, 0.75), "eurosat_clip": ds("accuracy", 0.4, 0.4)},
        }},
        "skipped": {"elevater": {"mnist": "data/elevater/mnist does not exist", "gtsrb": "data/elevater/gtsrb does not exist"}},
    }


def test_table_has_languages_side_by_side_with_deltas_and_the_mean():
    md = markdown(result())
    assert "| dataset | metric | teacher en | teacher zh | int8 en | int8 zh |" in md
    assert "| cifar-10 | top-1 | 90.0 | 80.0 | 70.0 (-20.0) | 75.0 (-5.0) |" in md
    assert "| **mean of 2** |  | 70.0 | 60.0 | 55.0 (-15.0) | 57.5 (-2.5) |" in md
    assert "skipped 2 datasets not found under data/elevater: mnist, gtsrb" in md
    assert "eurosat_clip: read through torchvision.EuroSAT; not ELEVATER's test set: full 27000-image set" in md
    assert "| teacher | 13.94M | 224 px |" in md


def test_report_files(tmp_path):
    paths = write_report(result(), tmp_path / "rep")
    assert set(paths) == {"json", "md", "png"} and all(p.is_file() for p in paths.values())
    assert [r.name for r in result_rows(result())] == ["cifar-10", "eurosat_clip"]


def test_a_run_that_scores_no_eval_split_still_gets_its_checks():
    """A run with eval.splits [] (the full-size rehearsal's) exports fp32 and int8 but scores nothing: the report's
    int8-vs-fp32 check is left out instead of subtracting None (bench/full_size.py found the crash)."""
    from compress.pipeline.report import acceptance_checks

    pte = {"pte_bytes": {"image": 4_000_000, "text": 7_000_000}, "latency_ms": {"image": 3.0, "text": 1.0}, "zero_shot": {}}
    int8 = {"pte_bytes": {"image": 1_000_000, "text": 2_000_000}, "latency_ms": {"image": 2.0, "text": 0.5}, "zero_shot": {}}
    checks = acceptance_checks({"models": {"student_fp32_pte": pte, "student_int8_pte": int8}})
    assert checks["int8_to_fp32_pte_bytes_total"] == round(3 / 11, 4)
    assert not any(k.startswith("int8_pte_eval_top1_drop") for k in checks)


def _run_report(role=None):
    zs = lambda en, zh: {"eval": {"en": {"top1": en, "top5": 1.0}, "zh": {"top1": zh, "top5": 1.0}}}
    models = {"teacher": {"params": 9, "zero_shot": zs(0.9, 0.8)}, "student_fp32": {"params": 2, "zero_shot": zs(0.6, 0.5)},
              "student_int8": {"params": 2, "zero_shot": zs(0.55, 0.52)}}
    if role:
        models = {"student_fp32": models["student_fp32"]}
    return {"name": "r", **({"role": role} if role else {}), "models": models,
            "recipe": {"qat": {"scheme": "int8"}},
            "training": {"align": {"epoch_loss": [2.0, 1.0]}, "qat": {"epoch_loss": [0.45, 0.41]}}}


def test_run_plots_read_right(tmp_path):
    """Issue 18 item 7: zero_shot.png is in % like the tables, each quantized model is drawn beside its fp32 one (in
    points), every chart names its model (the teacher's own run labels its student_fp32 the teacher), and the loss
    panels carry each epoch's mean over the faint per-step curve."""
    from compress.pipeline.report import plot, plot_losses

    fig = plot(_run_report(), tmp_path / "zero_shot.png")
    top, delta = fig.axes[0], fig.axes[1]
    assert "(%)" in top.get_ylabel() and top.get_ylim() == (0.0, 100.0) and (tmp_path / "zero_shot.png").is_file()
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["teacher", "student_fp32", "student_int8"]
    assert [round(p.get_height(), 6) for p in top.patches[2:4]] == [60.0, 50.0]  # student_fp32 en, zh in %
    assert [t.get_text() for t in delta.get_legend().get_texts()] == ["student_int8 − student_fp32"]
    assert [round(p.get_height(), 6) for p in delta.patches] == [-5.0, 2.0]  # points
    fig = plot(_run_report("reference_teacher"), tmp_path / "teacher.png")
    assert len(fig.axes) == 1 and "reference teacher" in fig.axes[0].get_title()
    assert fig.axes[0].get_legend().get_texts()[0].get_text().startswith("teacher")

    csv = tmp_path / "scalars.csv"
    rows = [("align", 1, 1, 3.0), ("align", 2, 1, 1.0), ("align", 3, 2, 1.5), ("align", 4, 2, 0.5),
            ("qat", 1, 1, 0.6), ("qat", 2, 1, 0.4), ("qat", 3, 2, 0.3), ("qat", 4, 2, 0.5)]
    csv.write_text("stage,step,epoch,loss,lr,images_per_s,parts\n" + "".join(f"{s},{i},{e},{x},0,0,\n" for s, i, e, x in rows))
    fig = plot_losses(csv, tmp_path / "loss.png", _run_report())
    assert [ax.get_title() for ax in fig.axes] == ["align (student fp32, stage 2)", "qat (student int8, QAT)"]
    raw, mean = fig.axes[1].get_lines()
    assert list(raw.get_ydata()) == [0.6, 0.4, 0.3, 0.5] and raw.get_alpha() < 1 and mean.get_alpha() is None
    assert list(mean.get_xdata()) == [1.5, 3.5] and list(mean.get_ydata()) == [0.45, 0.41]  # report.md's epoch means
    fig = plot_losses(csv, tmp_path / "teacher_loss.png", _run_report("reference_teacher"))
    assert fig.axes[0].get_title() == "align (teacher)"
    assert plot_losses(tmp_path / "missing.csv", tmp_path / "x.png") is None
