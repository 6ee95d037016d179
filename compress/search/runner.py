"""The search: draw candidates, size them, measure latency where the predictor cannot rule them out, train the
measured ones under budget with successive halving, and write runs/<name>/search/.

Order per tower: (1) every candidate gets params and MACs (one forward); (2) `seed_measurements` per family are
measured to fit the predictor (smallest and middle MACs: the ones most likely to fit); (3) the proxy pool is filled
family by family with the candidates predicted closest under the budget (the most capacity that fits), each
measured before it may enter; (4) successive halving over the pool. Only measured candidates under budget train.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.progress import console, log
from compress.recipe.schema import Recipe
from compress.search.latency import LatencyTable, Measurer, Predictor, build_tower, example_input, prediction_error
from compress.search.proxy import ProxyTrainer, halving_rungs, mean_top1
from students.spaces import (
    ImageCandidate, ImageSpace, TextCandidate, TextSpace, count_macs, count_params, sample_image_candidates,
    sample_text_candidates,
)


@dataclass
class Row:
    """One candidate as candidates.jsonl reports it."""

    cand: ImageCandidate | TextCandidate
    params: int = 0
    macs: int = 0
    predicted_int8_ms: float | None = None
    fp32_ms: float | None = None
    int8_ms: float | None = None
    proxy_top1: dict[str, float] | None = None
    proxy_steps: int = 0
    status: str = "sized"  # sized | pruned | measured | over budget | trained | eliminated | winner

    @property
    def name(self) -> str:
        return self.cand.name()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.cand.as_dict(), "spec": self.cand.spec(), "params": self.params,
                "macs": self.macs, "predicted_int8_ms": _r(self.predicted_int8_ms), "fp32_ms": _r(self.fp32_ms),
                "int8_ms": _r(self.int8_ms), "proxy_top1": self.proxy_top1, "proxy_steps": self.proxy_steps,
                "status": self.status}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class TowerResult:
    tower: str
    budget_ms: float
    rows: list[Row]
    winner: Row | None
    predictor: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ live table
class Display:
    """Live rich table of the candidates measured / trained, with an ETA from the average cost of each kind of work;
    plain log lines when stderr is not a terminal."""

    def __init__(self, title: str) -> None:
        self.title, self.rows, self.live = title, [], None
        self.work = {"measure": [0, 0, 0.0], "train": [0, 0, 0.0]}  # kind -> [done, planned, seconds]

    def __enter__(self) -> "Display":
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=console, refresh_per_second=2, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()

    def pause(self) -> None:  # the training loop shows its own progress bar; rich allows one live display at a time
        if self.live is not None:
            self.live.stop()

    def resume(self) -> None:
        if self.live is not None:
            self.live.start()
            self.update()

    def plan(self, kind: str, n: int) -> None:
        self.work[kind][1] += n

    def done(self, kind: str, seconds: float, n: int = 1) -> None:
        w = self.work[kind]
        w[0] += n
        w[2] += seconds

    def eta(self) -> float:
        total = 0.0
        for done, planned, secs in self.work.values():
            if done:
                total += max(0, planned - done) * secs / done
        return total

    def _table(self):
        from rich.table import Table

        m, t = self.work["measure"], self.work["train"]
        caption = (f"measured {m[0]}/{m[1]} · trained {t[0]}/{t[1]} steps · ETA {self.eta() / 60:.1f} min")
        table = Table(title=self.title, caption=caption, show_lines=False)
        for col in ("candidate", "MMACs", "params", "pred ms", "int8 ms", "fp32 ms", "top1 en", "top1 zh", "status"):
            table.add_column(col, justify="left" if col in ("candidate", "status") else "right")
        fmt = lambda x, f="{:.2f}": "-" if x is None else f.format(x)  # noqa: E731
        shown = [r for r in self.rows if r.status != "sized" and r.status != "pruned"][-30:]
        for r in shown:
            p = r.proxy_top1 or {}
            table.add_row(r.name, f"{r.macs / 1e6:.1f}", f"{r.params / 1e6:.2f}M", fmt(r.predicted_int8_ms),
                          fmt(r.int8_ms), fmt(r.fp32_ms), fmt(p.get("en"), "{:.3f}"), fmt(p.get("zh"), "{:.3f}"), r.status)
        return table

    def update(self, line: str | None = None) -> None:
        if self.live is not None:
            self.live.update(self._table())
        elif line:
            log(line)


# ------------------------------------------------------------------------------------------------ one tower
def size_rows(cands, embed_dim: int, vocab_size: int) -> list[Row]:
    """Params and MACs of every candidate (one batch-1 forward each): the predictor's features."""
    from compress.progress import progress_bar

    rows = []
    with progress_bar("search: sizing candidates", len(cands)) as advance:
        for c in cands:
            tower = build_tower(c, embed_dim, vocab_size)
            rows.append(Row(c, count_params(tower), count_macs(tower, example_input(c, 1, vocab_size))))
            advance(c.name())
    return rows


def _seed_rows(rows: list[Row], per_family: int) -> list[Row]:
    """Per family: the smallest-MACs candidate, then the middle one, ... (most likely under budget first)."""
    out = []
    families = sorted({r.cand.family for r in rows})
    for fam in families:
        ordered = sorted((r for r in rows if r.cand.family == fam), key=lambda r: r.macs)
        picks = [ordered[0]] + [ordered[len(ordered) // 2]] + ordered[1:]
        seen: list[Row] = []
        for r in picks:
            if r not in seen:
                seen.append(r)
        out += seen[:per_family]
    return out


def search_tower(tower: str, rows: list[Row], budget: float, recipe: Recipe, measurer: Measurer,
                 trainer: ProxyTrainer, display: Display, fixed: dict[str, Any]) -> TowerResult:
    cfg = recipe.search
    predictor, errors = Predictor(), []
    times = {"measure": 0.0, "train": 0.0}
    display.rows = rows

    def measure(row: Row) -> None:
        pred = predictor.predict(row.cand.family, row.macs, row.params)
        if pred is not None:
            row.predicted_int8_ms = pred
        start = time.perf_counter()
        row.int8_ms = measurer.measure(row.cand, "int8")
        if "fp32" in cfg.quant:
            row.fp32_ms = measurer.measure(row.cand, "fp32")
        secs = time.perf_counter() - start
        times["measure"] += secs
        display.done("measure", secs)
        if pred is not None:
            errors.append((pred, row.int8_ms))
        predictor.add(row.cand.family, row.macs, row.params, row.int8_ms)
        row.status = "measured" if row.int8_ms <= budget else "over budget"
        display.update(f"search {tower}: {row.name} int8 {row.int8_ms:.2f} ms"
                       + (f" (predicted {pred:.2f})" if pred is not None else "") + f" -> {row.status}")

    measured: list[Row] = []
    seeds = _seed_rows(rows, cfg.seed_measurements)
    display.plan("measure", min(cfg.max_measurements, len(seeds) + cfg.proxy.candidates))
    for row in seeds[: cfg.max_measurements]:
        measure(row)
        measured.append(row)
    # Fill the proxy pool: family by family, the candidates predicted closest under the budget first.
    limit = budget * (1 + cfg.predictor_margin)
    pool = [r for r in measured if r.status == "measured"]
    pool = sorted(pool, key=lambda r: -r.int8_ms)
    by_family: dict[str, list[Row]] = {}
    for r in rows:
        if r in measured:
            continue
        pred = predictor.predict(r.cand.family, r.macs, r.params)
        r.predicted_int8_ms = pred
        if pred is not None and pred > limit:
            r.status = "pruned"
            continue
        by_family.setdefault(r.cand.family, []).append(r)
    for fam in by_family:
        by_family[fam].sort(key=lambda r: -(r.predicted_int8_ms or 0.0))
    chosen: list[Row] = []
    while len(chosen) < cfg.proxy.candidates and any(by_family.values()) and len(measured) < cfg.max_measurements:
        for fam in sorted(by_family):
            if not by_family[fam] or len(chosen) >= cfg.proxy.candidates or len(measured) >= cfg.max_measurements:
                continue
            row = by_family[fam].pop(0)
            pred = predictor.predict(fam, row.macs, row.params)
            if pred is not None and pred > limit:  # the refitted predictor now rules it out
                row.predicted_int8_ms, row.status = pred, "pruned"
                continue
            measure(row)
            measured.append(row)
            if row.status == "measured":
                chosen.append(row)
    # The pool: measured candidates under budget, the most MACs first within the family round-robin above.
    pool_rows = chosen + [r for r in pool if r not in chosen]
    pool_rows = _round_robin(pool_rows, cfg.proxy.candidates)
    for r in rows:
        if r.status == "sized":
            r.status = "not measured"
    winner = None
    if pool_rows:
        winner = _halving(tower, pool_rows, recipe, trainer, display, fixed, times)
    return TowerResult(tower, budget, rows, winner, {**prediction_error(errors), "points": sum(len(v) for v in predictor.points.values())},
                       {k: round(v, 1) for k, v in times.items()})


def _round_robin(rows: list[Row], n: int) -> list[Row]:
    by_family: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: -r.macs):
        by_family.setdefault(r.cand.family, []).append(r)
    out = []
    while len(out) < n and any(by_family.values()):
        for fam in sorted(by_family):
            if by_family[fam] and len(out) < n:
                out.append(by_family[fam].pop(0))
    return out


def _halving(tower: str, pool: list[Row], recipe: Recipe, trainer: ProxyTrainer, display: Display,
             fixed: dict[str, Any], times: dict[str, float]) -> Row:
    p = recipe.search.proxy
    rungs = halving_rungs(len(pool), p.steps, p.eta)
    trained = [(k, s) for k, s in rungs if k > 1] or rungs[:1]
    per_epoch = trainer.steps_per_epoch(p.batch_size)
    plan, prev = 0, 0
    for k, s in trained:
        plan += k * max(0, -(-(s - prev) // per_epoch) * per_epoch)
        prev = s
    display.plan("train", plan)
    alive = list(pool)
    for k, steps in trained:
        alive = alive[:k]
        for row in alive:
            key = f"{tower}:{row.name}"
            before = trainer.steps_done.get(key, 0)
            start = time.perf_counter()
            display.pause()
            try:
                image = row.cand if tower == "image" else fixed.get("image")
                text = row.cand if tower == "text" else fixed.get("text")
                row.proxy_top1 = trainer.train_to(key, image, text, steps)
            finally:
                display.resume()
            secs = time.perf_counter() - start
            times["train"] += secs
            row.proxy_steps = trainer.steps_done.get(key, 0)
            display.done("train", secs, row.proxy_steps - before)
            row.status = "trained"
            display.update(f"search {tower}: {row.name} proxy top-1 en {row.proxy_top1.get('en', 0):.3f} "
                           f"zh {row.proxy_top1.get('zh', 0):.3f} after {row.proxy_steps} steps")
        alive.sort(key=lambda r: (-mean_top1(r.proxy_top1), r.int8_ms or 0.0, r.name))
        for r in alive[max(1, -(-k // p.eta)):]:
            r.status = "eliminated"
            trainer.drop(f"{tower}:{r.name}")
    winner = alive[0]
    winner.status = "winner"
    for r in pool:
        if r is not winner:
            trainer.drop(f"{tower}:{r.name}")
    display.update()
    return winner


# ------------------------------------------------------------------------------------------------ both towers
def check_searchable(recipe: Recipe) -> None:
    """The search's one-line refusals, before any data or teacher is loaded for it."""
    from compress.errors import UserError

    cfg = recipe.search
    if not any(getattr(cfg.budget_ms, t) is not None for t in ("image", "text")):
        raise UserError("search.budget_ms: no tower has a latency budget; set e.g. search: {budget_ms: {image: 5.0}}")
    if recipe.teacher.kind == "none":
        raise UserError("teacher.kind: the search's accuracy proxy distils from the recipe's teacher; name one "
                        "(kind reference or hf)")


def run_search(recipe: Recipe, out: Path, data, teacher, table_path: Path | None = None) -> dict[str, TowerResult]:
    """Search the towers that have a budget (search.budget_ms); image first, then text paired with the image winner.

    `data` (its `.train` pairs) and `teacher` come from the pipeline, which loaded them for the recipe."""
    from compress.search.proxy import split_holdout
    from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer
    from compress.train.distill import OnlineTargets
    from tokenizers import Tokenizer

    check_searchable(recipe)
    cfg = recipe.search
    towers = [t for t in ("image", "text") if getattr(cfg.budget_ms, t) is not None]
    torch.manual_seed(cfg.seed)
    log("[bold cyan]▶ search[/]: tokenizer")
    train, held = split_holdout(data.train, cfg.proxy.holdout, cfg.seed)
    base = train_tokenizer(tokenizer_corpus(data.train), recipe.students.text.vocab_size,
                           recipe.students.text.inventory)
    tokenizers: dict[int, BilingualTokenizer] = {}

    def tokenizer_for(n: int) -> BilingualTokenizer:
        if n not in tokenizers:
            tokenizers[n] = BilingualTokenizer(Tokenizer.from_str(base.to_str()), n)
        return tokenizers[n]

    vocab = tokenizer_for(recipe.students.text.context_length).vocab_size
    trainer = ProxyTrainer(recipe, train, held, OnlineTargets(teacher), tokenizer_for)
    measurer = Measurer(LatencyTable(table_path) if table_path else LatencyTable(), cfg.device, cfg.threads,
                        cfg.latency_runs, recipe.students.embed_dim, vocab)
    results: dict[str, TowerResult] = {}
    fixed: dict[str, Any] = {}
    for tower in towers:
        budget = float(getattr(cfg.budget_ms, tower))
        if tower == "image":
            sp = cfg.space.image
            cands = sample_image_candidates(ImageSpace(tuple(sp.families), tuple(sp.image_sizes)), cfg.trials.image, cfg.seed)
        else:
            sp = cfg.space.text
            cands = sample_text_candidates(TextSpace(tuple(sp.widths), tuple(sp.layers), tuple(sp.heads),
                                                     tuple(sp.mlp_ratios), tuple(sp.context_lengths)), cfg.trials.text, cfg.seed)
        log(f"search {tower}: {len(cands)} candidates, budget {budget:g} ms int8 on {cfg.device} ({cfg.threads} thread(s))")
        start = time.perf_counter()
        rows = size_rows(cands, recipe.students.embed_dim, vocab)
        sizing = time.perf_counter() - start
        with Display(f"search: {tower} tower, budget {budget:g} ms") as display:
            res = search_tower(tower, rows, budget, recipe, measurer, trainer, display, fixed)
        res.seconds["size"] = round(sizing, 1)
        results[tower] = res
        if res.winner is not None:
            fixed[tower] = res.winner.cand
            log(f"search {tower}: winner {res.winner.name} (int8 {res.winner.int8_ms:.2f} ms, proxy top-1 "
                f"{res.winner.proxy_top1})")
        else:
            log(f"[yellow]search {tower}: no measured candidate fits {budget:g} ms[/]")
    results_meta = {"table_hits": measurer.hits, "lowerings": measurer.measured}
    for r in results.values():
        r.seconds.update(results_meta)
    return results
