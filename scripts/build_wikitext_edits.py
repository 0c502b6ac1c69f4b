"""Build lit_edit's WikiText generation-editing set (the MEND paper's WikiText task) from WikiText's raw text.

    OMP_NUM_THREADS=1 python scripts/build_wikitext_edits.py            # the shipped file: 9 min on one busy core
    python scripts/build_wikitext_edits.py --raw FILE --model DIR --out FILE --edits 20 --passages 10

1. Passages: the lines of ``--raw`` that are not headings, have at least ``--min-words`` words and are ASCII (the
   filter of MEND's ``data_classes/wiki.py``), in a seeded random order; the first ``--passages`` go to the
   out-of-scope pool, the others (disjoint from them) to the edits.
2. An edit: a prefix of a passage (a seeded number of words, at most ``--max-prompt-tokens`` tokens) is x_e; the
   base model samples ``--n-tokens`` tokens after it (ancestral sampling, temperature 1, no EOS or newline token,
   the first token one that starts a word), which are y_e; the prefix without a seeded number of its first words
   is x'_e. A sample is kept only when its text, joined to the prefix as lit_edit joins targets (a space),
   tokenizes back to exactly the sampled tokens, so the edit target is the model's own sample; otherwise it is
   drawn again (up to ``--tries`` times, then the passage is replaced by the next). The passage's own next words
   are kept too (``original``).
3. Each edit names ``--out-of-scope`` passages of the pool (a seeded draw), cut to ``--max-passage-tokens``.

The output (``lit_edit.data.wikitext``'s format) starts with a header holding this command, the seed, the base model
and its SHA-256, and the source file and its SHA-256. The same arguments, model, library versions and thread count
give the same file.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lit_edit.data.batch import PromptTokenizer  # noqa: E402
from lit_edit.data.datamodule import resolve_data_path  # noqa: E402
from lit_edit.data.wikitext import write_wikitext_edits  # noqa: E402
from lit_edit.model_names import DEFAULT_MODEL  # noqa: E402
from lit_edit.models import ModelSpec, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from lit_edit.provenance import file_sha256, sha256_of, versions  # noqa: E402

DEFAULT_RAW = "shared:wikitext/wiki.test.raw"
DEFAULT_OUT = ROOT / "lit_edit" / "data" / "builtin" / "wikitext.json"


@dataclass
class Pending:
    """An edit waiting for its sample: the passage it comes from and the cuts drawn for it."""

    line: int
    words: list[str]
    prefix_words: int
    rephrase_cut: int
    attempts: int = 0

    @property
    def prefix(self) -> str:
        return " ".join(self.words[:self.prefix_words])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", default=DEFAULT_RAW, help="WikiText raw text: a file or shared:REL (default %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model: an embedded name or a local directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file (.json array or .jsonl)")
    parser.add_argument("--edits", type=int, default=500)
    parser.add_argument("--passages", type=int, default=250, help="size of the out-of-scope passage pool")
    parser.add_argument("--out-of-scope", type=int, default=4, help="pool passages per edit (MEND validates with 4)")
    parser.add_argument("--n-tokens", type=int, default=10, help="sampled continuation length (MEND: 10)")
    parser.add_argument("--min-words", type=int, default=50, help="shortest passage kept, in words (MEND: 50)")
    parser.add_argument("--prefix-words", type=int, nargs=2, default=(24, 64), metavar=("MIN", "MAX"))
    parser.add_argument("--max-prompt-tokens", type=int, default=96)
    parser.add_argument("--max-passage-tokens", type=int, default=96)
    parser.add_argument("--passage-prompt-words", type=int, default=4,
                        help="words of an out-of-scope passage given as its prompt (the rest is scored)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tries", type=int, default=8)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    low, high = args.prefix_words
    if not 2 <= low <= high:
        parser.error(f"--prefix-words MIN MAX needs 2 <= MIN <= MAX, got {low} {high}")
    if args.out_of_scope > args.passages:
        parser.error(f"--out-of-scope {args.out_of_scope} is more than the pool (--passages {args.passages})")
    for name in ("edits", "passages", "out_of_scope", "n_tokens", "batch_size", "tries", "passage_prompt_words"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def candidate_passages(raw: Path, min_words: int) -> list[tuple[int, list[str]]]:
    """(1-based line, words) of every passage line: not a ``= Heading =``, ``min_words`` words or more, ASCII."""
    found = []
    for number, line in enumerate(raw.read_text(encoding="utf-8").split("\n"), 1):
        text = line.strip()
        words = text.split()
        if text and not text.startswith("=") and len(words) >= min_words and text.isascii():
            found.append((number, words))
    return found


def fit_words(words: list[str], count: int, max_tokens: int, prompts: PromptTokenizer) -> int:
    """The most words, at most ``count``, whose text is at most ``max_tokens`` tokens as a prompt."""
    while count > 1 and len(prompts.prompt_ids(" ".join(words[:count]))) > max_tokens:
        count -= 1
    return count


def original_continuation(words: list[str], start: int, n_tokens: int, prompts: PromptTokenizer) -> str | None:
    """The passage's own words after ``start``, as few as make up ``n_tokens`` tokens as a target (None: too few)."""
    for stop in range(start + 1, len(words) + 1):
        text = " ".join(words[start:stop])
        if len(prompts.target_ids(text)) >= n_tokens:
            return text
    return None


def suppressed_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids a continuation may not contain: special tokens (EOS ends a passage early) and newlines (a passage
    is one line)."""
    special = set(tokenizer.all_special_ids)
    newline = {i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])}
    return sorted(special | newline)


def word_start_tokens(tokenizer: PreTrainedTokenizerBase, prompts: PromptTokenizer) -> torch.Tensor:
    """BoolTensor over the vocabulary: the tokens a target can start with, those that ``" " + their text`` tokenizes
    to (``" the"``, not ``"the"`` or ``","``). Drawing the first token among them saves most redraws."""
    allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i]).strip()
        if text and tokenizer(prompts.target_separator + text, add_special_tokens=False)["input_ids"] == [i]:
            allowed[i] = True
    return allowed


class FirstTokenStartsAWord(LogitsProcessor):
    """Masks the first sampled position to :func:`word_start_tokens`; later positions are left alone."""

    def __init__(self, allowed: torch.Tensor, prompt_width: int) -> None:
        self.allowed = allowed
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.prompt_width:
            return scores
        width = min(scores.shape[-1], len(self.allowed))
        masked = torch.full_like(scores, float("-inf"))
        masked[:, :width] = torch.where(self.allowed[:width], scores[:, :width], masked[:, :width])
        return masked


@torch.inference_mode()
def sample(model: PreTrainedModel, prompts: PromptTokenizer, batch: list[Pending], n_tokens: int, suppress: list[int],
           word_starts: torch.Tensor) -> list[list[int]]:
    """``n_tokens`` sampled ids after each prefix (left-padded into one batch), the first one starting a word."""
    rows = [prompts.prompt_ids(p.prefix) for p in batch]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), prompts.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                         max_new_tokens=n_tokens, min_new_tokens=n_tokens, suppress_tokens=suppress,
                         pad_token_id=prompts.pad_id,
                         logits_processor=LogitsProcessorList([FirstTokenStartsAWord(word_starts, width)]))
    return out[:, width:].tolist()


def accepted_text(ids: list[int], tokenizer: PreTrainedTokenizerBase, prompts: PromptTokenizer) -> str | None:
    """The sample's text when lit_edit's target tokenization gives back exactly ``ids``; else None."""
    text = tokenizer.decode(ids).strip()
    if not text or "\n" in text:
        return None
    try:
        return text if prompts.target_ids(text) == ids else None
    except ValueError:
        return None


def build(args: argparse.Namespace) -> Path:
    """Sample the edits and write the file; progress goes to stderr."""
    raw, _ = resolve_data_path(args.raw, "--raw")
    spec = ModelSpec(name=args.model)
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    prompts = PromptTokenizer.for_model(tokenizer, "causal", max(args.max_prompt_tokens, args.max_passage_tokens)
                                        + args.n_tokens + 1, model)
    rng = random.Random(args.seed)
    candidates = candidate_passages(raw, args.min_words)
    rng.shuffle(candidates)
    if len(candidates) < args.edits + args.passages:
        raise SystemExit(f"{raw} has {len(candidates)} passages of {args.min_words}+ words; --edits {args.edits} "
                         f"and --passages {args.passages} need {args.edits + args.passages}")
    pool_source, edit_source = candidates[:args.passages], candidates[args.passages:]

    passages: dict[str, str] = {}
    seen_prompts: set[str] = set()
    for line, words in pool_source:
        keep = fit_words(words, len(words), args.max_passage_tokens, prompts)
        head = " ".join(words[:args.passage_prompt_words])
        if keep > args.passage_prompt_words and head not in seen_prompts:  # one passage per prompt (see wikitext.py)
            seen_prompts.add(head)
            passages[f"p{line}"] = " ".join(words[:keep])
    pool_ids = list(passages)
    if len(pool_ids) < args.out_of_scope:
        raise SystemExit(f"only {len(pool_ids)} pool passages are usable; lower --out-of-scope or raise --passages")

    def pending(line: int, words: list[str]) -> Pending:
        count = fit_words(words, min(rng.randint(*args.prefix_words), len(words) - 1), args.max_prompt_tokens, prompts)
        return Pending(line, words, count, rng.randint(1, max(1, count // 2)))

    spare = iter(edit_source)
    queue = [pending(*next(spare)) for _ in range(args.edits)]
    suppress, word_starts = suppressed_tokens(tokenizer), word_start_tokens(tokenizer, prompts)
    kept: list[dict] = []
    redrawn = replaced = 0
    start = time.perf_counter()
    round_number = 0
    while queue:
        torch.manual_seed(args.seed * 100_003 + round_number)  # one seed per round: the same file every run
        round_number += 1
        batch, queue = queue[:args.batch_size], queue[args.batch_size:]
        for item, ids in zip(batch, sample(model, prompts, batch, args.n_tokens, suppress, word_starts), strict=True):
            text = accepted_text(ids, tokenizer, prompts)
            if text is not None:
                kept.append(edit_row(item, text, rng, pool_ids, args, prompts))
                continue
            item.attempts += 1
            redrawn += 1
            if item.attempts < args.tries:
                queue.append(item)
                continue
            replaced += 1
            try:
                queue.append(pending(*next(spare)))
            except StopIteration:
                raise SystemExit("ran out of passages whose samples tokenize back; lower --edits") from None
        print(f"{len(kept)}/{args.edits} edits sampled ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    model_dir, _ = resolve_model_path(spec)
    model_files = [f for f in Path(model_dir).iterdir() if f.suffix in (".safetensors", ".bin", ".json", ".gguf")]
    header = {
        "description": "WikiText generation edits (MEND's WikiText task): x_e a passage prefix, y_e the base "
                       "model's own sampled continuation, x'_e the prefix without its first words, other passages "
                       "out of scope (scored by perplexity)",
        "command": shlex.join(["python", "scripts/build_wikitext_edits.py", *args.argv]),
        "seed": args.seed,
        "base_model": args.model,
        "base_model_sha256": sha256_of(model_files),
        "source": args.raw,
        "source_sha256": file_sha256(raw),
        "n_tokens": args.n_tokens,
        "passage_prompt_words": args.passage_prompt_words,
        "sampling": "ancestral (temperature 1, no top-k/top-p), EOS and newline tokens suppressed, the first token "
                    "drawn among word starts; a sample is kept only if ' ' + its text tokenizes back to it",
        "edits": len(kept),
        "passages": len(passages),
        "redrawn_samples": redrawn,
        "replaced_passages": replaced,
        "versions": {k: v for k, v in versions().items() if k in ("python", "torch", "transformers")},
    }
    kept.sort(key=lambda row: int(row["case_id"].removeprefix("w")))
    return write_wikitext_edits(args.out, header, passages, kept)


def edit_row(item: Pending, continuation: str, rng: random.Random, pool_ids: list[str], args: argparse.Namespace,
             prompts: PromptTokenizer) -> dict:
    """One edit line of the output file."""
    row = {
        "case_id": f"w{item.line}",
        "source_line": item.line,
        "prefix": item.prefix,
        "continuation": continuation,
        "rephrase": " ".join(item.words[item.rephrase_cut:item.prefix_words]),
        "out_of_scope": rng.sample(pool_ids, args.out_of_scope),
    }
    original = original_continuation(item.words, item.prefix_words, args.n_tokens, prompts)
    if original is not None:
        row["original"] = original
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    path = build(args)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
