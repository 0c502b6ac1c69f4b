"""Benchmarks of the memory-based editors (SERAC, the edit cache) against MEND on SmolLM2-135M.

    python scripts/benchmark_memory_editors.py latency --sizes 10 1000 10000
        SERAC's query latency with that many stored edits, as a ratio to the base model's forward pass.
    python scripts/benchmark_memory_editors.py sweep --data zsre --limit 50
        The cache's threshold: ES and DD for every epsilon; epsilon* gives a drawdown like MEND's on the same edits;
        a table at epsilon*/2, epsilon*, 2 epsilon* and a PNG plot (docs/figures/).
    python scripts/benchmark_memory_editors.py batch --limit 100 --sizes 1 10 100
        SERAC and MEND with 1, 10, 100 simultaneous edits: ES and DD.

Data: ``counterfact`` (CounterFact val), ``zsre`` (the last 500 of zsre_mend_train_10000, held out from training),
``wise`` (WISE hallucination passages: long Wikipedia-style contexts; the paraphrase is the passage behind an unrelated
web text, out of scope are a web text and another passage, labelled with the base model's own next word), ``wikitext``
(the project's WikiText generation edits, ``builtin:wikitext``: a passage prefix continued by 10 sampled tokens, other
passages out of scope and scored by perplexity DD; ``--match ppl_dd`` sets epsilon* there). Every
command takes ``--device`` (cpu or cuda) and ``--limit``; results go to ``results/memory_editors_*.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lit_edit.data.datamodule import load_split, resolve_data_path
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import MEND, SERAC, EditCache, Editor
from lit_edit.editors.edited_model import aligned_logits
from lit_edit.evaluation.scores import EditScores
from lit_edit.evaluation.scoring import score
from lit_edit.generation import greedy_completion
from lit_edit.metrics import IGNORE_INDEX, example_agreement, example_correct, labelled_examples

DATA = {
    "counterfact": ("shared:counterfact/counterfact-val.json", "counterfact_easyedit"),
    "zsre": ("shared:zsre/zsre_mend_train_10000.json#9500:10000", "zsre_mend"),
    "wikitext": ("builtin:wikitext", "wikitext_edits"),
}
FILLER = (("shared:zsre/zsre_mend_train_10000.json#0:9500", "zsre_mend"),  # stored edits for the latency runs
          ("shared:counterfact/counterfact-train.json", "counterfact_easyedit"))
MEND_CHECKPOINT = "checkpoints/mend-smollm2-135m/best.ckpt"
SERAC_CHECKPOINT = "checkpoints/serac-smollm2-135m/best.ckpt"


def wise_records(editor: Editor, limit: int) -> list[EditRecord]:
    """WISE hallucination passages as edits: passage -> its next sentence. In scope: the passage, and the passage
    behind another record's web text (a long, distracting context). Out of scope: this record's web text and the next
    record's passage, each labelled with the base model's own greedy next word (so that DD sees any change)."""
    path, _ = resolve_data_path("shared:wise/hallucination-edit.json")
    rows = json.loads(path.read_text())[: limit + 2]
    if len(rows) < 3:
        raise ValueError(f"{path}: need at least 3 passages")

    def own_word(prompt: str) -> str:
        words = greedy_completion(editor.model, editor.tokenizer, "causal", prompt, 4).split()
        return words[0] if words else "."

    records = []
    for i, row in enumerate(rows[:limit]):
        distractor, other = rows[(i + 1) % len(rows)], rows[(i + 2) % len(rows)]
        records.append(EditRecord(
            case_id=f"wise-{i}", prompt=row["prompt"], target_new=row["target_new"], subject=row["subject"],
            paraphrases=(f"{distractor['locality_prompt']}\n{row['prompt']}",),
            out_of_scope=(LabeledPrompt(row["locality_prompt"], own_word(row["locality_prompt"])),),
            hard_out_of_scope=(LabeledPrompt(other["prompt"], own_word(other["prompt"])),)))
    return records


def records_for(name: str, limit: int, editor: Editor) -> list[EditRecord]:
    if name == "wise":
        return wise_records(editor, limit)
    spec, fmt = DATA[name]
    return load_split(spec, fmt)[:limit]


def scored(editor: Editor, records: list[EditRecord], per_batch: int = 1) -> dict[str, float]:
    """ES, paraphrase ES, DD, token accuracy and edit seconds with ``per_batch`` simultaneous edits (shared scoring)."""
    scores = EditScores().to(editor.device)
    for start in range(0, len(records), per_batch):
        batch = editor.prompts.batch(records[start:start + per_batch]).to(editor.device)
        score(editor, batch, scores)
    return {key: float(scores.as_logged()[key].compute()) for key in
            ("es", "paraphrase_es", "dd", "ppl_dd", "retention", "token_accuracy", "edit_seconds")}


def build(kind: str, args: argparse.Namespace, **kwargs: Any) -> Editor:
    if kind == "mend":
        return MEND(checkpoint=args.mend, rank=64, max_length=args.max_length).to(args.device).eval()
    if kind == "serac":
        checkpoint = args.serac if Path(args.serac).exists() else None
        if checkpoint is None:
            print(f"note: {args.serac} does not exist: SERAC is untrained (train it: python train.py --config configs/serac.yaml)")
        return SERAC(checkpoint=checkpoint, max_length=args.max_length).to(args.device).eval()
    return EditCache(max_length=args.max_length, **kwargs).to(args.device).eval()


def write(name: str, payload: dict[str, Any]) -> Path:
    path = Path("results") / f"memory_editors_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


# -- latency -------------------------------------------------------------------------------------------
def timed(fn: Any, repeats: int, device: str, before: Any = None) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up (``before()`` runs untimed before each)."""
    fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def latency(args: argparse.Namespace) -> None:
    serac = build("serac", args)
    queried = load_split(*DATA["counterfact"])[: args.limit]  # edits whose prompts are queried, in and out of scope
    queries = serac.prompts.batch(queried).to(args.device)
    examples = [queries.in_scope, queries.out_of_scope]
    filler = [record for spec, fmt in FILLER for record in load_split(spec, fmt)]
    rows = []
    for size in sorted(args.sizes):
        if size < len(queried) or size - len(queried) > len(filler):
            raise ValueError(f"--sizes {size}: needs between {len(queried)} and {len(queried) + len(filler)} edits")
        start = time.perf_counter()
        memory = serac.memory_for(queried + filler[: size - len(queried)])
        store_seconds = time.perf_counter() - start
        routed = serac.routed(memory)
        base = timed(lambda: [aligned_logits(serac.model, e, "causal") for e in examples], args.repeats, args.device)
        with_memory = timed(lambda r=routed: [r.logits(e) for e in examples], args.repeats, args.device)
        # First sight of each edit: no descriptor states cached yet (every routed descriptor is read).
        forget = serac.counterfactual.prefix_cache.clear if serac.counterfactual.prefix_cache is not None else None
        first_sight = timed(lambda r=routed: [r.logits(e) for e in examples], args.repeats, args.device, forget)
        routed_rows = sum(int((routed.router.route(e).edits >= 0).sum()) for e in examples)
        # Out-of-scope queries alone: what most of a deployed model's traffic would be.
        base_out = timed(lambda: aligned_logits(serac.model, queries.out_of_scope, "causal"), args.repeats, args.device)
        serac_out = timed(lambda r=routed: r.logits(queries.out_of_scope), args.repeats, args.device)
        rows.append({"stored_edits": size, "base_seconds": base, "serac_seconds": with_memory,
                     "ratio": with_memory / base, "first_sight_seconds": first_sight, "first_sight_ratio": first_sight / base,
                     "out_of_scope_ratio": serac_out / base_out, "routed_rows": routed_rows,
                     "query_rows": sum(len(e) for e in examples), "store_seconds": store_seconds})
        print(f"{size:>6} stored edits: SERAC {with_memory * 1000:.1f} ms, base {base * 1000:.1f} ms, "
              f"ratio {with_memory / base:.2f} (first sight of the edits {first_sight / base:.2f}), "
              f"out of scope only {serac_out / base_out:.2f} "
              f"({routed_rows}/{rows[-1]['query_rows']} rows routed; "
              f"storing took {store_seconds:.1f} s)")
    print("\n| stored edits | query rows | routed rows | base forward (ms) | SERAC (ms) | ratio | ratio, first sight "
          "of the edits | ratio, out of scope only |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stored_edits']} | {r['query_rows']} | {r['routed_rows']} | {r['base_seconds'] * 1000:.1f} | "
              f"{r['serac_seconds'] * 1000:.1f} | {r['ratio']:.2f} | {r['first_sight_ratio']:.2f} | "
              f"{r['out_of_scope_ratio']:.2f} |")
    print("written:", write("latency", {"device": args.device, "rows": rows}))


# -- the cache's threshold -----------------------------------------------------------------------------
def row_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the float64 sum of NLL over labelled tokens and their count: pooled over rows, the perplexity that
    perplexity DD compares (``lit_edit.evaluation.metrics.perplexity_drawdown``)."""
    token_nll = F.cross_entropy(logits.float().transpose(1, 2), labels.long(), ignore_index=IGNORE_INDEX,
                                reduction="none")
    return token_nll.double().sum(1), (labels != IGNORE_INDEX).sum(1).double()


@torch.no_grad()
def cache_rows(cache: EditCache, records: list[EditRecord]) -> dict[str, torch.Tensor]:
    """Per query row, single-edit protocol: distance to its edit's key, and whether the base model and the cached
    answer get it right; from these, ES and DD at any epsilon are exact (the cache answers a row iff distance <= eps)."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("in_d", "in_base", "in_cached", "para", "out_d",
                                                          "out_base", "out_cached", "out_same", "out_nll_base",
                                                          "out_nll_cached", "out_tokens")}
    for record in records:
        batch = cache.prompts.batch([record]).to(cache.device)
        memory = cache.memory_for(batch)
        router = cache.routed(memory).router
        for prefix, examples in (("in", batch.in_scope), ("out", batch.out_of_scope)):
            states, logits = cache.prompt_states(examples)
            distance, _ = memory.nearest(states)
            labels = examples.labels[:, 1:]
            answered = router.answer(examples, torch.zeros(len(examples), dtype=torch.long, device=cache.device), logits)
            keep = labelled_examples(labels)
            out[f"{prefix}_d"].append(distance[keep].cpu())
            out[f"{prefix}_base"].append(example_correct(logits, labels)[keep].cpu())
            out[f"{prefix}_cached"].append(example_correct(answered, labels)[keep].cpu())
            if prefix == "out":  # whether the cached answer would change the base model's answer at all
                out["out_same"].append(example_agreement(logits, answered, labels)[keep].cpu())
                (base_nll, tokens), (cached_nll, _) = row_nll(logits, labels), row_nll(answered, labels)
                out["out_nll_base"].append(base_nll[keep].cpu())
                out["out_nll_cached"].append(cached_nll[keep].cpu())
                out["out_tokens"].append(tokens[keep].cpu())
        out["para"].append(batch.in_scope_is_paraphrase[labelled_examples(batch.in_scope.labels[:, 1:]).cpu()].cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def cache_scores(rows: dict[str, torch.Tensor], epsilon: float) -> dict[str, float]:
    routed_out = rows["out_d"] <= epsilon
    inside = torch.where(rows["in_d"] <= epsilon, rows["in_cached"], rows["in_base"]).float()
    outside = torch.where(routed_out, rows["out_cached"], rows["out_base"]).float()
    para = rows["para"]
    nll_change = torch.where(routed_out, rows["out_nll_cached"], rows["out_nll_base"]).sum() - rows["out_nll_base"].sum()
    return {"epsilon": epsilon, "es": float(inside.mean()),
            "paraphrase_es": float(inside[para].mean()) if para.any() else float("nan"),
            "dd": float(rows["out_base"].float().mean() - outside.mean()),
            "ppl_dd": float(torch.expm1(nll_change / rows["out_tokens"].sum())),
            "retention": float(1.0 - (routed_out & ~rows["out_same"]).float().mean())}


def sweep(args: argparse.Namespace) -> None:
    cache = build("cache", args)
    records = records_for(args.data, args.limit, cache)
    mend = scored(build("mend", args), records) if args.target is None else None
    target = args.target if mend is None else mend[args.match]
    rows = cache_rows(cache, records)
    distances = torch.cat([rows["in_d"], rows["out_d"]])
    grid = torch.linspace(0.0, float(distances.max()) * 1.05, 400).tolist()
    curve = [cache_scores(rows, eps) for eps in grid]
    # epsilon*: the largest epsilon whose drawdown (DD, or 1 - retention) is closest to MEND's; it rises with epsilon.
    gap = min(abs(point[args.match] - target) for point in curve)
    epsilon_star = max(point["epsilon"] for point in curve if abs(point[args.match] - target) <= gap + 1e-9)
    if args.epsilon is not None:
        epsilon_star = args.epsilon
    marks = [cache_scores(rows, eps) for eps in (epsilon_star / 2, epsilon_star, 2 * epsilon_star)]
    cache.epsilon = epsilon_star
    check = scored(cache, records)  # the real editor at epsilon*, through the shared scoring
    if any(abs(check[key] - marks[1][key]) > 1e-6 for key in ("es", "dd", "retention")) or \
            abs(check["ppl_dd"] - marks[1]["ppl_dd"]) > 1e-4 * max(1.0, abs(check["ppl_dd"])):
        raise RuntimeError(f"the sweep disagrees with EditCache at epsilon*: {marks[1]} vs {check}")
    lines = [f"cache threshold sweep: {args.data}, {len(records)} edits, one at a time; ε* matches MEND's "
             f"{args.match} = {target:.3f}", "", "| ε | ES | paraphrase ES | DD | perplexity DD | retention |",
             "|---|---|---|---|---|---|"]
    for name, point in zip(("ε*/2", "ε*", "2ε*"), marks, strict=True):
        lines.append(f"| {name} = {point['epsilon']:.2f} | {point['es']:.3f} | {point['paraphrase_es']:.3f} | "
                     f"{point['dd']:+.3f} | {point['ppl_dd']:+.4g} | {point['retention']:.3f} |")
    if mend is not None:
        lines.append(f"| MEND | {mend['es']:.3f} | {mend['paraphrase_es']:.3f} | {mend['dd']:+.3f} | "
                     f"{mend['ppl_dd']:+.4g} | {mend['retention']:.3f} |")
    print("\n".join(lines))
    figure = Path(args.figure or f"docs/figures/cache_threshold_{args.data}.png")
    plot(curve, marks, mend, figure, f"cache on {args.data} ({len(records)} edits)", perplexity=args.match == "ppl_dd")
    print("written:", figure, write(f"sweep_{args.data}", {"data": args.data, "edits": len(records), "mend": mend,
                                                             "match": args.match, "target": target,
                                                             "epsilon_star": epsilon_star,
                                                             "marks": marks, "curve": curve, "check": check}))


def plot(curve: list[dict[str, float]], marks: list[dict[str, float]], mend: dict | None,
         path: Path, title: str, perplexity: bool = False) -> None:
    """ES, paraphrase ES, DD and retention against epsilon, MEND's levels as lines; with ``perplexity``, the
    perplexity ratio (1 + perplexity DD) on a log axis at the right, since it is not a share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [p["epsilon"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(eps, [p["es"] for p in curve], label="cache ES")
    ax.plot(eps, [p["paraphrase_es"] for p in curve], label="cache paraphrase ES", linestyle=":")
    ax.plot(eps, [p["dd"] for p in curve], label="cache DD")
    ax.plot(eps, [p["retention"] for p in curve], label="cache retention", linestyle="-.")
    if mend is not None:
        ax.axhline(mend["dd"], color="grey", linestyle="--", linewidth=0.8, label="MEND DD")
        ax.axhline(mend["retention"], color="grey", linestyle="-.", linewidth=0.8, label="MEND retention")
        ax.axhline(mend["es"], color="black", linestyle="--", linewidth=0.8, label="MEND ES")
    for point, name in zip(marks, ("ε*/2", "ε*", "2ε*"), strict=True):
        ax.axvline(point["epsilon"], color="red", alpha=0.3, linewidth=0.8)
        ax.annotate(name, (point["epsilon"], 1.02), ha="center", fontsize=8, annotation_clip=False)
    if perplexity:
        ratio_axis = ax.twinx()
        ratio_axis.plot(eps, [1.0 + p["ppl_dd"] for p in curve], color="purple", linewidth=1.0)
        if mend is not None:
            ratio_axis.axhline(1.0 + mend["ppl_dd"], color="purple", linestyle="--", linewidth=0.8)
        ratio_axis.set_yscale("log")
        ratio_axis.set_ylabel("perplexity post / pre (purple; dashed: MEND)", fontsize=8)
    ax.set_xlabel("ε (L2 distance of averaged final hidden states)")
    ax.set_ylim(-0.05, 1.08)
    ax.set_title(title, fontsize=9, pad=14)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# -- simultaneous edits ------------------------------------------------------------------------------------
def batch(args: argparse.Namespace) -> None:
    editors = {"serac": build("serac", args), "mend": build("mend", args)}
    records = records_for(args.data, args.limit, editors["mend"])
    rows = []
    for size in args.sizes:
        for name, editor in editors.items():
            start = time.perf_counter()
            result = scored(editor, records, size)
            rows.append({"editor": name, "edits_at_once": size, **result, "seconds": time.perf_counter() - start})
            print(rows[-1])
    print(f"\n{args.data}, {len(records)} edits\n\n| edits at once | editor | ES | paraphrase ES | DD | retention |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['edits_at_once']} | {r['editor']} | {r['es']:.3f} | {r['paraphrase_es']:.3f} | {r['dd']:+.3f} | "
              f"{r['retention']:.3f} |")
    print("written:", write(f"batch_{args.data}", {"data": args.data, "edits": len(records), "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, default_limit in (("latency", 8), ("sweep", 50), ("batch", 100)):
        sub = commands.add_parser(name)
        sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        sub.add_argument("--limit", type=int, default=default_limit,
                         help="edits used (latency: edits whose prompts are queried)")
        sub.add_argument("--mend", default=MEND_CHECKPOINT)
        sub.add_argument("--serac", default=SERAC_CHECKPOINT)
        sub.add_argument("--max_length", type=int, default=256)
        sub.add_argument("--data", choices=["counterfact", "zsre", "wise", "wikitext"], default="zsre")
    commands.choices["latency"].add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    commands.choices["latency"].add_argument("--repeats", type=int, default=5)
    commands.choices["sweep"].add_argument("--match", choices=["dd", "retention", "ppl_dd"], default="retention",
                                           help="what epsilon* matches MEND on: DD, or retention (1 - the share of "
                                                "out-of-scope answers changed; informative even where the base model "
                                                "rarely knows the out-of-scope answers, which leaves DD near 0), or "
                                                "perplexity DD (generation editing: --data wikitext)")
    commands.choices["sweep"].add_argument("--target", type=float, help="MEND's value to match (default: measured)")
    commands.choices["sweep"].add_argument("--epsilon", type=float, help="use this epsilon* instead of matching MEND")
    commands.choices["sweep"].add_argument("--figure", help="PNG path (default docs/figures/cache_threshold_DATA.png)")
    commands.choices["batch"].add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()
    torch.manual_seed(0)
    {"latency": latency, "sweep": sweep, "batch": batch}[args.command](args)


if __name__ == "__main__":
    main()
