"""How well the search's accuracy proxy ranks architectures: Kendall tau between proxy and full-training ranks.

    python -m bench.search_proxy [--recipe recipes/search_mobile.yaml] [--archs 6] [--proxy-steps N]
                                 [--full-epochs E] [--out bench/out/search_proxy]
        ->  bench/out/search_proxy.json

Architectures: the trained candidates of the recipe's last search (runs/<name>/search/candidates.jsonl) when there
are enough, topped up with draws from the recipe's space. Each gets (a) the proxy: the search's short stage-1
distillation scored zero-shot on the held-out training samples (`--proxy-steps`, default the first rung's steps),
and (b) full training: the recipe's stage 1 + stage 2 (`--full-epochs` each, default the recipe's), QAT and export
off, zero-shot top-1 on the `eval` split. The score on both sides is the mean of English and Chinese top-1. Each full
run is a normal run folder under --out/runs/<arch>, read instead of retrained when its report exists, so an
interrupted bench continues. Expensive (hours at the headline recipe's epochs); run it with `nice`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.atomic import write_json


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either ranking count for neither side)."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ta) * (conc + disc + tb)) ** 0.5
    return (conc - disc) / denom if denom else 0.0


def pick_archs(recipe, n: int) -> list:
    from students.spaces import ImageSpace, candidate_from_dict, sample_image_candidates

    found = []
    path = Path("runs") / recipe.name / "search" / "candidates.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        found = [candidate_from_dict(r) for r in rows if r.get("proxy_top1") and r.get("tower") == "image"]
    sp = recipe.search.space.image
    extra = sample_image_candidates(ImageSpace(tuple(sp.families), tuple(sp.image_sizes)), 4 * n, recipe.search.seed + 1)
    names = {c.name() for c in found}
    for c in extra:
        if len(found) >= n:
            break
        if c.name() not in names:
            found.append(c)
            names.add(c.name())
    return found[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="recipes/search_mobile.yaml")
    ap.add_argument("--archs", type=int, default=6)
    ap.add_argument("--proxy-steps", type=int, default=None)
    ap.add_argument("--full-epochs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/out/search_proxy"))
    args = ap.parse_args()

    from compress.pipeline.data import load_run_data
    from compress.pipeline.run import run_recipe
    from compress.pipeline.run import load_teacher
    from compress.recipe import load_recipe
    from compress.search.proxy import ProxyTrainer, mean_top1, split_holdout
    from compress.tokenizer import tokenizer_corpus
    from compress.tokenizer import BilingualTokenizer, train_tokenizer
    from compress.train.distill import OnlineTargets
    from tokenizers import Tokenizer

    recipe = load_recipe(args.recipe)
    if args.archs < 5:
        raise SystemExit("--archs: Kendall tau over fewer than 5 architectures says little; use 5 or more")
    archs = pick_archs(recipe, args.archs)
    steps = args.proxy_steps or recipe.search.proxy.steps
    data = load_run_data(recipe.data, recipe.seed)
    train, held = split_holdout(data.train, recipe.search.proxy.holdout, recipe.search.seed)
    base = train_tokenizer(tokenizer_corpus(data.train), recipe.students.text.vocab_size,
                           recipe.students.text.inventory)
    tok = lambda n: BilingualTokenizer(Tokenizer.from_str(base.to_str()), n)  # noqa: E731
    trainer = ProxyTrainer(recipe, train, held, OnlineTargets(load_teacher(recipe)), tok)
    rows = []
    for cand in archs:
        proxy = trainer.train_to(cand.name(), cand, None, steps)
        trainer.drop(cand.name())
        folder = args.out / "runs" / cand.name()
        report = folder / "report.json"
        if not report.is_file():
            sets = {"students": recipe.students.model_copy(update={
                "image": recipe.students.image.model_validate({"arch": "custom", "spec": cand.spec()})})}
            full = recipe.model_copy(update=sets | {
                "name": cand.name(), "data": recipe.data.model_copy(update={"image_size": cand.image_size}),
                "qat": recipe.qat.model_copy(update={"enabled": False}),
                "export": recipe.export.model_copy(update={"enabled": False}),
                "eval": recipe.eval.model_copy(update={"splits": ["eval"]}),
            })
            if args.full_epochs is not None:
                full = full.model_copy(update={
                    "distill": full.distill.model_copy(update={"epochs": args.full_epochs}),
                    "align": full.align.model_copy(update={"epochs": args.full_epochs})})
            run_recipe(full, folder, resume=folder.is_dir())
        zs = json.loads(report.read_text(encoding="utf-8"))["models"]["student_fp32"]["zero_shot"]["eval"]
        full_top1 = {lang: zs[lang]["top1"] for lang in ("en", "zh")}
        rows.append({"name": cand.name(), "spec": cand.spec(), "image_size": cand.image_size, "proxy_top1": proxy,
                     "proxy_steps": trainer.steps_done.get(cand.name(), steps), "full_top1": full_top1})
        print(f"{cand.name()}: proxy {proxy} full {full_top1}", flush=True)
    tau = kendall_tau([mean_top1(r["proxy_top1"]) for r in rows], [mean_top1(r["full_top1"]) for r in rows])
    result = {"recipe": args.recipe, "archs": len(rows), "proxy_steps": steps,
              "full_epochs": args.full_epochs or {"distill": recipe.distill.epochs, "align": recipe.align.epochs},
              "kendall_tau": round(tau, 4), "rows": rows}
    write_json(args.out.with_suffix(".json"), result)
    print(f"Kendall tau (proxy vs full training, {len(rows)} architectures): {tau:.3f} -> {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
