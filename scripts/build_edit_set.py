"""Build lit_edit's built-in counterfactual edit set from the candidate facts the base model knows.

    python scripts/build_edit_set.py                      # the default model (lit_edit.models)
    python scripts/build_edit_set.py --model-dir DIR      # any local Hugging Face causal LM

1. Every candidate fact of ``lit_edit/data/builtin/facts.py`` is asked with its relation's FIRST
   template. The fact is *known* when, under teacher forcing, the model's argmax at every position
   of ``" " + object`` is that object's token (batched, a few minutes on 2 CPU cores).
2. Subjects of known facts are shuffled (seeded) and split 70/15/15 by number of facts; all facts
   of one subject land in the same split.
3. Each known fact becomes one counterfactual edit whose neighbours (out-of-scope and hard
   out-of-scope prompts) are known facts of the same split only.

Writes ``train.json``, ``val.json``, ``test.json`` and ``README.md`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lit_edit.data.batch import PromptTokenizer  # noqa: E402
from lit_edit.data.builtin.facts import RELATIONS, Fact, all_facts, fill  # noqa: E402
from lit_edit.data.records import EditRecord, LabeledPrompt  # noqa: E402
from lit_edit.editors.edited_model import aligned_logits  # noqa: E402
from lit_edit.metrics import example_correct  # noqa: E402

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
DEFAULT_OUT = ROOT / "lit_edit" / "data" / "builtin"


def load(model_dir: str | None):
    """The model and tokenizer: ``--model-dir`` if given, else the project's default model."""
    if model_dir is None:
        try:
            from lit_edit.models import ModelSpec, load_model_and_tokenizer
        except ImportError:
            model_dir = str(ROOT / "checkpoints" / "models" / "smollm2-135m")
        else:
            model, tokenizer = load_model_and_tokenizer(ModelSpec())
            return model.eval(), tokenizer, f"lit_edit.models.load_model_and_tokenizer(ModelSpec()) ({ModelSpec().name})"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer, model_dir


@torch.inference_mode()
def known_mask(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[bool]:
    """For each (prompt, target): does teacher forcing reproduce every target token?

    Uses the framework's own tokenization and ES criterion, so a "known" fact is exactly one whose
    pre-edit ES is 1 when lit_edit measures it.
    """
    prompts = PromptTokenizer(tokenizer, "causal")
    result: list[bool] = []
    for start in range(0, len(pairs), batch_size):
        examples = prompts([LabeledPrompt(p, t) for p, t in pairs[start:start + batch_size]])
        result += example_correct(*aligned_logits(model, examples, "causal")).tolist()
    return result


def split_subjects(facts: list[Fact], seed: int) -> dict[str, str]:
    """Subject -> split, seeded, so that every relation's facts fall ~70/15/15 into train/val/test.

    Subjects come in a seeded random order; each goes to the split whose load on the subject's
    relations, measured as a fraction of the split's share, is lowest (ties: a draw weighted by
    the shares). All facts of one subject therefore share a split.
    """
    relations_of: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        relations_of[f.subject].add(f.relation)
    subjects = sorted(relations_of)
    rng = random.Random(seed)
    rng.shuffle(subjects)
    load = {s: Counter() for s in SPLITS}
    assigned: dict[str, str] = {}
    for subject in subjects:
        cost = {s: sum(load[s][r] for r in relations_of[subject]) / FRACTIONS[s] for s in SPLITS}
        best = min(cost.values())
        tied = [s for s in SPLITS if cost[s] - best < 1e-9]
        split = rng.choices(tied, weights=[FRACTIONS[s] for s in tied])[0]
        assigned[subject] = split
        for r in relations_of[subject]:
            load[split][r] += 1
    return assigned


def with_neighbours(pool: list[Fact]) -> list[Fact]:
    """The facts of a split that can have a hard out-of-scope neighbour among themselves.

    Drops, until nothing changes, every fact whose subject has no other known relation and whose
    relation has no other known subject in the split; what remains neighbours only itself.
    """
    pool = list(pool)
    while True:
        subjects = Counter(f.subject for f in pool)
        relations = Counter(f.relation for f in pool)
        kept = [f for f in pool if subjects[f.subject] > 1 or relations[f.relation] > 1]
        if len(kept) == len(pool):
            return kept
        pool = kept


def labeled(fact: Fact) -> LabeledPrompt:
    return LabeledPrompt(fill(RELATIONS[fact.relation].templates[0], fact.subject), fact.target)


def build_records(known: list[Fact], split_of: dict[str, str], seed: int) -> tuple[dict[str, list[EditRecord]], int]:
    """One counterfactual edit per known fact, neighbours drawn from the same split only."""
    objects = {name: sorted(set(rel.facts.values())) for name, rel in RELATIONS.items()}
    records: dict[str, list[EditRecord]] = {s: [] for s in SPLITS}
    dropped = 0
    for split in SPLITS:
        in_split = [f for f in known if split_of[f.subject] == split]
        pool = with_neighbours(in_split)
        dropped += len(in_split) - len(pool)
        by_subject: dict[str, list[Fact]] = defaultdict(list)
        by_relation: dict[str, list[Fact]] = defaultdict(list)
        for f in pool:
            by_subject[f.subject].append(f)
            by_relation[f.relation].append(f)
        for fact in pool:
            rng = random.Random(f"{seed}|{fact.relation}|{fact.subject}")
            relation = RELATIONS[fact.relation]
            target_new = rng.choice([o for o in objects[fact.relation] if o != fact.target])

            unrelated = [f for f in pool if f.subject != fact.subject and f.relation != fact.relation]
            out_of_scope: list[Fact] = []
            for f in rng.sample(unrelated, len(unrelated)):
                if len(out_of_scope) == 2:
                    break
                if all(f.subject != o.subject and f.relation != o.relation for o in out_of_scope):
                    out_of_scope.append(f)

            hard: list[Fact] = []
            same_subject = [f for f in by_subject[fact.subject] if f.relation != fact.relation]
            if same_subject:
                hard.append(rng.choice(same_subject))
            same_relation = [f for f in by_relation[fact.relation] if f.subject != fact.subject]
            if same_relation:
                # prefer a neighbour that shares the edited fact's true object (a careless edit moves it too)
                sharing = [f for f in same_relation if f.target == fact.target]
                hard.append(rng.choice(sharing or same_relation))
            if not hard or not out_of_scope:  # cannot happen after with_neighbours on a non-trivial split
                raise RuntimeError(f"no neighbours for {fact} in split {split}")

            records[split].append(EditRecord(
                case_id=f"builtin-{split}-{len(records[split]):04d}",
                prompt=fill(relation.templates[0], fact.subject),
                target_new=target_new,
                subject=fact.subject,
                target_true=fact.target,
                relation=fact.relation,
                paraphrases=tuple(fill(t, fact.subject) for t in relation.templates[1:]),
                out_of_scope=tuple(labeled(f) for f in out_of_scope),
                hard_out_of_scope=tuple(labeled(f) for f in hard),
            ))
    return records, dropped


def leaks(fact: Fact) -> bool:
    """The answer is spelled out in one of the fact's own prompts (a copy task, not knowledge)."""
    pattern = re.compile(rf"\b{re.escape(fact.target)}\b", re.IGNORECASE)
    return any(pattern.search(fill(t, fact.subject)) for t in RELATIONS[fact.relation].templates)


def write_readme(path: Path, *, command: str, model_name: str, seed: int, candidates: list[Fact],
                 leaking: int, known: list[Fact], records: dict[str, list[EditRecord]], dropped: int,
                 seconds: float) -> None:
    cand_by_rel = Counter(f.relation for f in candidates)
    known_by_rel = Counter(f.relation for f in known)
    edits_by_rel = Counter(r.relation for split in SPLITS for r in records[split])
    total = sum(len(records[s]) for s in SPLITS)
    rows = "\n".join(
        f"| `{name}` | {rel.description} | \"{rel.templates[0]}\" | {cand_by_rel[name]} | {known_by_rel[name]} "
        f"| {edits_by_rel[name]} |"
        for name, rel in RELATIONS.items()
    )
    subjects = {s: len({r.subject for r in records[s]}) for s in SPLITS}
    text = f"""# Built-in counterfactual edit set

`train.json`, `val.json` and `test.json` hold {total} counterfactual edits (JSON lists of
`EditRecord.to_dict()` records, readable with `lit_edit.data.records.record_from_dict` or
`lit_edit.data.readers.load_edit_records`) about facts that the default base model,
SmolLM2-135M-Instruct, demonstrably knows.

| split | edits | subjects |
|---|---|---|
| train | {len(records["train"])} | {subjects["train"]} |
| val | {len(records["val"])} | {subjects["val"]} |
| test | {len(records["test"])} | {subjects["test"]} |

## How it was made

Regenerate with (deterministic for a given model and seed; about {max(1, round(seconds / 60))} minute(s) on 2 CPU cores):

```
{command}
```

1. **Candidates.** `facts.py` lists {len(candidates)} hand-written (subject, relation, true object) facts
   over {len(RELATIONS)} relations, each relation with at least three prompt templates that end right
   before the object. {leaking} candidates whose answer is spelled out in their own prompt were set aside.
2. **Known facts.** Model: {model_name}. Each remaining candidate is asked with its relation's *first*
   template; it counts as known when, under teacher forcing on `prompt + " " + object`, the argmax
   prediction equals every token of `" " + object`. {len(known)} of {len(candidates) - leaking} are known.
3. **Split by subject.** The subjects of known facts are shuffled with seed {seed} and assigned
   greedily so that every relation's facts fall about 70/15/15 % into train/val/test; all facts of a
   subject (a country's capital, currency, language, ...) are in the same split, so no subject occurs
   in two splits.
4. **One edit per known fact.**
   - `prompt`: the first template; `paraphrases`: the other templates of the relation (>= 2).
   - `target_true`: the true object; `target_new`: another object of the same relation, drawn
     uniformly (seeded per fact) from the relation's other candidate objects, never the true one.
   - `out_of_scope`: 2 known facts of the same split about other subjects and other relations,
     labelled with their true objects.
   - `hard_out_of_scope`: (a) a known fact of the *same subject* with another relation (when the
     subject has one) and (b) a known fact of the *same relation* about another subject of the same
     split, preferring one that shares the edited fact's true object; labelled with true objects.
   - Every neighbour prompt is the `prompt` of another edit of the same split (a known fact), so
     the unedited model answers all out-of-scope prompts correctly. {dropped} known facts were
     dropped because their split held no neighbour for them (a lone fact of its relation whose
     subject has no other known fact).

## Known facts per relation

| relation | meaning | first template | candidates | known | edits |
|---|---|---|---|---|---|
{rows}
| **total** | | | **{len(candidates)}** | **{len(known)}** | **{total}** |

## Notes

- The first template of each relation is the phrasing, among several tried, under which the model
  answered the most candidates; 135M parameters know many facts only in one wording.
- Relations tried and left out: musical work -> composer (66 candidates, e.g. "Swan Lake was
  composed by"; 0 known under eight phrasings). Composers still appear through `occupation`.
- Objects keep their correct spelling even where the model prefers another ("euro", not "Euro"),
  which costs some known facts.

Paraphrase prompts are *not* filtered by knowledge: they measure how far an edit generalises, and
the unedited model may or may not answer them correctly.
"""
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=None,
                        help="local Hugging Face model directory (default: lit_edit.models' default model, "
                             "else checkpoints/models/smollm2-135m)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.time()
    model, tokenizer, model_name = load(args.model_dir)
    candidates = all_facts()
    usable = [f for f in candidates if not leaks(f)]
    pairs = [(fill(RELATIONS[f.relation].templates[0], f.subject), f.target) for f in usable]
    mask = known_mask(model, tokenizer, pairs, batch_size=args.batch_size)
    known = [f for f, ok in zip(usable, mask, strict=True) if ok]
    print(f"{len(known)} of {len(usable)} candidate facts known ({len(candidates) - len(usable)} leaking set aside)")

    split_of = split_subjects(known, args.seed)
    records, dropped = build_records(known, split_of, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = [r.to_dict() for r in records[split]]
        (args.out_dir / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"{split}: {len(rows)} edits")

    command = "python scripts/build_edit_set.py" + (f" --model-dir {args.model_dir}" if args.model_dir else "")
    if args.seed:
        command += f" --seed {args.seed}"
    write_readme(args.out_dir / "README.md", command=command, model_name=model_name, seed=args.seed,
                 candidates=candidates, leaking=len(candidates) - len(usable), known=known, records=records,
                 dropped=dropped, seconds=time.time() - start)
    for name in RELATIONS:
        n_known = sum(f.relation == name for f in known)
        print(f"  {name:22s} {n_known:4d} / {len(RELATIONS[name].facts)}")
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
