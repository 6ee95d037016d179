"""The search: draw candidates, size them, measure latency where the predictor cannot rule them out, train the
measured ones under budget with successive halving, and write runs/<name>/search/.

Order per tower: (1) every candidate gets params and MACs (one forward); (2) family by family in turn, a bisection
over the family's candidates sorted by MACs finds the largest that fits: the smallest first, then the middle, then
the middle of what is left, steered by pass / fail only (the predictor prunes a probe only beyond its own error
band); (3) the pool: the measured candidates under budget, most MACs first, family by family; (4) successive halving
over the pool. Only measured candidates under budget train.

Latency is in reference units (candidate / reference, timed in the same sitting: compress/search/latency.py), so the
budget means the same on any machine. Measuring runs in its own process on one core; meanwhile this process, pinned
to the other cores, trains the first rung of each candidate already measured under budget (`_Cores`). The pool is
picked from the measurements alone, so what trains and wins does not depend on which finished first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.progress import console, log
from compress.recipe.schema import Recipe
from compress.search.latency import (
    Budget, Latency, LatencyTable, MeasureProcess, Measurer, NamedCandidate, Predictor, build_tower, example_input,
    prediction_error,
)
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
    predicted_int8: float | None = None  # int8 latency / the reference's, predicted before it was measured
    fp32: Latency | None = None
    int8: Latency | None = None
    proxy_top1: dict[str, float] | None = None
    proxy_steps: int = 0
    status: str = "sized"  # sized | pruned | measured | over budget | trained | eliminated | winner

    @property
    def name(self) -> str:
        return self.cand.name()

    @property
    def int8_ms(self) -> float | None:
        return None if self.int8 is None else self.int8.ms

    @property
    def fp32_ms(self) -> float | None:
        return None if self.fp32 is None else self.fp32.ms

    @property
    def int8_ratio(self) -> float | None:
        """int8 latency in reference units: what the budget compares."""
        return None if self.int8 is None else self.int8.ratio

    @property
    def int8_speedup(self) -> float | None:
        """fp32 / int8, each over the reference's int8 program timed beside it (the two were timed in different
        sittings; the shared unit cancels the drift between them)."""
        return None if self.int8 is None or self.fp32 is None else self.fp32.ratio / self.int8.ratio

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.cand.as_dict(), "spec": self.cand.spec(), "params": self.params,
                "macs": self.macs, "predicted_int8_ratio": _r(self.predicted_int8), "int8_ratio": _r(self.int8_ratio),
                "int8_ms": _r(self.int8_ms), "fp32_ms": _r(self.fp32_ms),
                "reference_int8_ms": _r(None if self.int8 is None else self.int8.ref_ms),
                "fp32_ratio": _r(None if self.fp32 is None else self.fp32.ratio),
                "int8_speedup": _r(self.int8_speedup), "proxy_top1": self.proxy_top1, "proxy_steps": self.proxy_steps,
                "status": self.status}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class TowerResult:
    tower: str
    budget: Budget
    rows: list[Row]
    winner: Row | None
    predictor: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> ops left in float / outside XNNPACK
    reference: dict[str, Any] = field(default_factory=dict)


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
        for col in ("candidate", "MMACs", "params", "pred ×ref", "int8 ×ref", "int8 ms", "int8 speed-up", "top1 en",
                    "top1 zh", "status"):
            table.add_column(col, justify="left" if col in ("candidate", "status") else "right")
        fmt = lambda x, f="{:.2f}": "-" if x is None else f.format(x)  # noqa: E731
        shown = [r for r in self.rows if r.status != "sized" and r.status != "pruned"][-30:]
        for r in shown:
            p = r.proxy_top1 or {}
            table.add_row(r.name, f"{r.macs / 1e6:.1f}", f"{r.params / 1e6:.2f}M", fmt(r.predicted_int8),
                          fmt(r.int8_ratio), fmt(r.int8_ms, "{:.3f}"), fmt(r.int8_speedup), fmt(p.get("en"), "{:.3f}"),
                          fmt(p.get("zh"), "{:.3f}"), r.status)
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


def search_tower(tower: str, rows: list[Row], budget: Budget, recipe: Recipe, measurer: Measurer,
                 trainer: ProxyTrainer, display: Display, fixed: dict[str, Any]) -> TowerResult:
    cfg = recipe.search
    quants = tuple(cfg.quant)
    predictor = Predictor(margin=cfg.predictor_margin)
    times = {"measure": 0.0, "train": 0.0, "train_while_measuring": 0.0}
    display.rows = rows
    limit = budget.factor
    first_steps = cfg.proxy.steps

    # Per family, candidates by MACs; a bisection for the largest that fits: probe the smallest, then the middle
    # (search.seed_measurements: 1 or 2 of these before the rest), then the middle of what is left between the
    # largest that fitted and the smallest that did not. Only pass / fail steers it, never a latency value, so a
    # noisy timing cannot reorder the work unless it flips a candidate across the budget.
    ladder = {f: sorted((r for r in rows if r.cand.family == f), key=lambda r: (r.macs, r.name))
              for f in sorted({r.cand.family for r in rows})}
    lo = {f: -1 for f in ladder}  # index of the largest that fitted
    hi = {f: len(v) for f, v in ladder.items()}  # index of the smallest over budget (or pruned)
    probes = {f: 0 for f in ladder}
    measured: list[Row] = []
    turn = [0]
    display.plan("measure", min(cfg.max_measurements, sum(max(1, len(v).bit_length()) for v in ladder.values())))

    def probe(fam: str) -> Row | None:
        """The family's next candidate to measure, or None when its boundary is found."""
        while True:
            n = probes[fam]
            if n == 0:
                i = 0
            elif n == 1 and cfg.seed_measurements >= 2 and lo[fam] == 0:
                i = len(ladder[fam]) // 2
            else:
                i = (lo[fam] + hi[fam]) // 2 if lo[fam] >= 0 else -1
            if i <= lo[fam] or i >= hi[fam]:
                return None
            row = ladder[fam][i]
            probes[fam] += 1
            row.predicted_int8 = predictor.predict(fam, row.macs, row.params)
            if predictor.prunes(row.predicted_int8, limit, predictor.own_fit(fam)):
                row.status = "pruned"  # predicted beyond budget x (1 + band): as good as over budget
                hi[fam] = i
                continue
            return row

    def next_row() -> Row | None:
        """Family by family in turn, one bisection step each, until every family's boundary is found."""
        if len(measured) + (1 if pending else 0) >= cfg.max_measurements:
            return None
        fams = list(ladder)
        for k in range(len(fams)):
            fam = fams[(turn[0] + k) % len(fams)]
            row = probe(fam)
            if row is not None:
                turn[0] = (fams.index(fam) + 1) % len(fams)
                return row
        return None

    def launch(row: Row):  # row.predicted_int8 was set by probe(), with the fit as it stands until this one is recorded
        return row, measurer.submit(row.cand, quants), time.perf_counter()

    def record(row: Row, lat: dict[str, Latency], started: float) -> None:
        secs = time.perf_counter() - started
        times["measure"] += secs
        display.done("measure", secs)
        row.int8, row.fp32 = lat["int8"], lat.get("fp32")
        if row.predicted_int8 is not None:
            predictor.observe(row.predicted_int8, row.int8.ratio, predictor.own_fit(row.cand.family))
        predictor.add(row.cand.family, row.macs, row.params, row.int8.ratio)
        row.status = "measured" if budget.fits(row.int8) else "over budget"
        measured.append(row)
        i = ladder[row.cand.family].index(row)
        if row.status == "measured":
            lo[row.cand.family] = max(lo[row.cand.family], i)
        else:
            hi[row.cand.family] = min(hi[row.cand.family], i)
        pred = f" (predicted {row.predicted_int8:.2f})" if row.predicted_int8 is not None else ""
        speed = f", int8 speed-up {row.int8_speedup:.2f}x" if row.int8_speedup is not None else ""
        display.update(f"search {tower}: {row.name} int8 {row.int8.ratio:.2f}x reference{pred} "
                       f"({row.int8.ms:.3f} vs {row.int8.ref_ms:.3f} ms{speed}) -> {row.status}")

    ahead: list[Row] = []  # measured under budget, first rung not yet trained: work for this core meanwhile
    pending = None
    first = next_row()
    pending = launch(first) if first is not None else None
    while pending is not None:
        row, future, started = pending
        while ahead and not future.done():  # train while the other core measures (never changes the pool)
            t0 = time.perf_counter()
            _train(tower, ahead.pop(0), first_steps, trainer, display, fixed, times, speculative=True)
            times["train_while_measuring"] += time.perf_counter() - t0
        record(row, measurer.collect(row.cand, quants, future), started)
        if row.status == "measured":
            ahead.append(row)
        pending = None
        nxt = next_row()
        pending = launch(nxt) if nxt is not None else None
    # The pool: measured candidates under budget, the most MACs first within a family round-robin.
    pool_rows = _round_robin([r for r in measured if r.status == "measured"], cfg.proxy.candidates)
    for r in rows:
        if r.status == "sized":
            r.status = "not measured"
        if r not in pool_rows and r.proxy_top1 is not None:  # trained ahead but not picked: forget it
            r.proxy_top1, r.proxy_steps = None, 0
            trainer.drop(f"{tower}:{r.name}")
    winner = None
    if pool_rows:
        winner = _halving(tower, pool_rows, recipe, trainer, display, fixed, times)
    band = predictor.band()
    return TowerResult(tower, budget, rows, winner,
                       {**prediction_error(predictor.errors), "family_fit": prediction_error(predictor.family_errors),
                        "points": sum(len(v) for v in predictor.points.values()),
                        "units": "int8 latency / reference int8 latency",
                        "band": None if band is None else round(band, 4),
                        "pruned": sum(r.status == "pruned" for r in rows)},
                       {k: round(v, 1) for k, v in times.items()}, family_ops(rows, measurer))


def family_ops(rows: list[Row], measurer: Measurer) -> dict[str, dict[str, Any]]:
    """Per family, over its measured candidates: the int8 speed-up's range, the ops the int8 quantizer leaves in float
    and the ops left outside the XNNPACK delegate (the delegation report of each lowering, from the table)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.int8 is None:
            continue
        row = measurer.row(r.cand, "int8") or {}
        fam = out.setdefault(r.cand.family, {"measured": 0, "int8_speedup": [], "float_ops": {}, "non_delegated_ops": {}})
        fam["measured"] += 1
        if r.int8_speedup is not None:
            fam["int8_speedup"].append(round(r.int8_speedup, 3))
        for k in ("float_ops", "non_delegated_ops"):
            for op, n in (row.get(k) or {}).items():
                fam[k][op] = max(fam[k].get(op, 0), int(n))  # the most any one candidate of the family has
    for fam in out.values():
        sp = fam.pop("int8_speedup")
        fam["int8_speedup"] = {"min": min(sp), "max": max(sp)} if sp else None
    return out


def _train(tower: str, row: Row, steps: int, trainer: ProxyTrainer, display: Display, fixed: dict[str, Any],
           times: dict[str, float], speculative: bool = False) -> None:
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
    if not speculative:
        row.status = "trained"
    display.update(f"search {tower}: {row.name} proxy top-1 en {row.proxy_top1.get('en', 0):.3f} "
                   f"zh {row.proxy_top1.get('zh', 0):.3f} after {row.proxy_steps} steps"
                   + (" (while the other core measures)" if speculative else ""))


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
            _train(tower, row, steps, trainer, display, fixed, times)
        alive.sort(key=lambda r: (-mean_top1(r.proxy_top1), r.int8_ratio or 0.0, r.name))
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
    if not any(getattr(cfg.budget, t) is not None for t in ("image", "text")):
        raise UserError("search.budget: no tower has a latency budget; set e.g. search: {budget: {image: "
                        "{reference: mobilevit_xxs, factor: 1.0}}} or a number of ms")
    if recipe.teacher.kind == "none":
        raise UserError("teacher.kind: the search's accuracy proxy distils from the recipe's teacher; name one "
                        "(kind reference or hf)")


def reference_tower(recipe: Recipe, tower: str) -> NamedCandidate | ImageCandidate | TextCandidate:
    """The tower a budget is relative to: the relative budget's own reference, else search.reference[tower]; at the
    budget's image_size / context_length, else the recipe's."""
    from compress.recipe.schema import RelativeBudget

    b = getattr(recipe.search.budget, tower)
    ref = b.reference if isinstance(b, RelativeBudget) else recipe.search.reference.get(tower)
    size = (b.image_size if isinstance(b, RelativeBudget) else None) or recipe.data.image_size
    ctx = (b.context_length if isinstance(b, RelativeBudget) else None) or recipe.students.text.context_length
    if isinstance(ref, dict):
        spec = {k: v for k, v in ref.items() if k != "family"}
        if ref.get("family") == "text":
            return TextCandidate(spec["width"], spec["layers"], spec["heads"], float(spec["mlp_ratio"]), ctx)
        return ImageCandidate(ref["family"], size, spec)
    return NamedCandidate(ref, tower, size, ctx)


def tower_budget(recipe: Recipe, tower: str, measurer: Measurer) -> Budget:
    """A relative budget as written; an absolute one converted with the reference timed now, in this sitting."""
    from compress.recipe.schema import RelativeBudget

    b = getattr(recipe.search.budget, tower)
    name = measurer.reference.name()
    if isinstance(b, RelativeBudget):
        return Budget.relative(b.factor, name)
    return Budget.absolute(float(b), name, measurer.reference_ms("int8"))


class _Cores:
    """Both cores: the measuring process on the last core, this process (proxy training) on the others, with as many
    intra-op threads as it has cores; put back on exit. With one core, or search.parallel off, nothing changes and
    measurements run inline."""

    def __init__(self, parallel: bool) -> None:
        import os

        self.cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.parallel = parallel and len(self.cores) >= 2
        self.process: MeasureProcess | None = None
        self.threads = torch.get_num_threads()

    def __enter__(self) -> "_Cores":
        import os

        if self.parallel:
            os.sched_setaffinity(0, set(self.cores[:-1]))
            torch.set_num_threads(len(self.cores) - 1)
        return self

    def submit(self, job):
        """Measurer.process: the measuring process, started on the first table miss (a cached search spawns nothing)."""
        if self.process is None:
            self.process = MeasureProcess(self.cores[-1])
        return self.process.submit(job)

    def describe(self) -> str:
        if not self.parallel:
            return "measuring inline, one process"
        return (f"measuring in its own process on core {self.cores[-1]}, proxy training on core(s) "
                f"{','.join(map(str, self.cores[:-1]))} with {len(self.cores) - 1} thread(s)")

    def __exit__(self, *exc) -> None:
        import os

        if self.process is not None:
            self.process.close()
        if self.parallel:
            os.sched_setaffinity(0, set(self.cores))
            torch.set_num_threads(self.threads)


def run_search(recipe: Recipe, out: Path, data, teacher, table_path: Path | None = None) -> dict[str, TowerResult]:
    """Search the towers that have a budget (search.budget); image first, then text paired with the image winner.

    `data` (its `.train` pairs) and `teacher` come from the pipeline, which loaded them for the recipe."""
    from compress.search.proxy import split_holdout
    from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer
    from compress.train.distill import OnlineTargets
    from tokenizers import Tokenizer

    check_searchable(recipe)
    cfg = recipe.search
    towers = [t for t in ("image", "text") if getattr(cfg.budget, t) is not None]
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
    table = LatencyTable(table_path) if table_path else LatencyTable()
    results: dict[str, TowerResult] = {}
    fixed: dict[str, Any] = {}
    hits = lowered = 0
    with _Cores(cfg.parallel) as cores:
        log(f"search: {cores.describe()}")
        for tower in towers:
            measurer = Measurer(table, reference_tower(recipe, tower), cfg.device, cfg.threads, cfg.latency_runs,
                                recipe.students.embed_dim, vocab, cores if cores.parallel else None,
                                cfg.latency_rounds)
            budget = tower_budget(recipe, tower, measurer)
            if tower == "image":
                sp = cfg.space.image
                cands = sample_image_candidates(ImageSpace(tuple(sp.families), tuple(sp.image_sizes)), cfg.trials.image, cfg.seed)
            else:
                sp = cfg.space.text
                cands = sample_text_candidates(TextSpace(tuple(sp.widths), tuple(sp.layers), tuple(sp.heads),
                                                         tuple(sp.mlp_ratios), tuple(sp.context_lengths)), cfg.trials.text, cfg.seed)
            log(f"search {tower}: {len(cands)} candidates, budget {budget.describe()} on {cfg.device} "
                f"({cfg.threads} thread(s))")
            start = time.perf_counter()
            rows = size_rows(cands, recipe.students.embed_dim, vocab)
            sizing = time.perf_counter() - start
            with Display(f"search: {tower} tower, budget {budget.describe()}") as display:
                res = search_tower(tower, rows, budget, recipe, measurer, trainer, display, fixed)
            res.seconds["size"] = round(sizing, 1)
            res.reference = {"name": measurer.reference.name(), "spec_key": measurer.key(measurer.reference, "int8")}
            results[tower] = res
            hits, lowered = hits + measurer.hits, lowered + measurer.measured
            band = res.predictor.get("band")
            p, fam = res.predictor, res.predictor.get("family_fit") or {}
            nan = float("nan")
            log(f"search {tower}: latency predictor (in reference units, each prediction made before its "
                f"measurement): median error {p.get('median_abs_rel', nan):.0%}, max {p.get('max_abs_rel', nan):.0%} "
                f"over {p.get('n', 0)}; by a family's own fit median {fam.get('median_abs_rel', nan):.0%}, max "
                f"{fam.get('max_abs_rel', nan):.0%} over {fam.get('n', 0)}; pruned {p['pruned']}"
                + (" (never enough checked predictions)" if band is None else f" (beyond a {band:.0%} band)"))
            if res.winner is not None:
                fixed[tower] = res.winner.cand
                log(f"search {tower}: winner {res.winner.name} (int8 {res.winner.int8_ratio:.2f}x the reference, "
                    f"int8 speed-up {res.winner.int8_speedup or float('nan'):.2f}x, proxy top-1 {res.winner.proxy_top1})")
            else:
                log(f"[yellow]search {tower}: no measured candidate fits {budget.describe()}[/]")
    for r in results.values():
        r.seconds.update({"table_hits": hits, "lowerings": lowered})
    return results
