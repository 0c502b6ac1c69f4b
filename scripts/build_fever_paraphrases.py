"""Build the paraphrases of FEVER Lite claims that lit_edit ships (``lit_edit/data/fever_paraphrases.jsonl``).

FEVER Lite has no rephrasings, and an edit's in-scope inputs are the claim and paraphrases of it. These are made by
fixed, meaning-preserving rewrites of the claim's surface form, never by a language model: a rewrite that keeps the
claim's proposition keeps its label, so the paraphrase rows of an edit stay labelled correctly, and the same claims
give the same file on any machine. (SmolLM2-135M-Instruct was the alternative; at that size a "paraphrase" too often
drops a negation or a qualifier such as "only", which flips the claim's truth, and a label that is wrong for the
row would be scored as the editor's failure.)

The rewrites (each applies where its pattern fits; ``--per-claim`` of those that fit are drawn per claim by a
generator seeded with ``--seed`` and the claim's text, so a claim's paraphrases do not depend on which others are
built):

* attribution: "According to Wikipedia, ...", "It is true that ...", "Reportedly, ...", "It is said that ...";
* moving a trailing time or place phrase to the front ("X was founded in 1962." -> "In 1962, X was founded.");
* "indeed" after the claim's first "is", "was", "are" or "were" ("X is a film." -> "X is indeed a film.");
* word substitution with a few safe synonyms (film/movie, famous/well-known, ...).

The rewrites that change the claim's own words (the last three) are taken first where they fit, then attributions
fill up to ``--per-claim``, so the paraphrases are not only the claim behind a prefix.

Which claims: the first ``--validation`` claims of the validation file and the first ``--test`` of the test file
(default 2,000 and 1,000, about 1 MB), in file order, one JSON line each: ``{"claim", "paraphrases", "split",
"line"}``. The reader (format ``fever``) joins a claim with its paraphrases by the claim's exact text; a claim
outside the subset is edited with no paraphrase.

    python scripts/build_fever_paraphrases.py            # rewrites lit_edit/data/fever_paraphrases.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "lit_edit" / "data" / "fever_paraphrases.jsonl"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fever"

#: Sentence openers that are no proper noun, so a rewrite that puts words before them may lowercase them.
_COMMON_OPENERS = {"The", "A", "An", "There", "This", "These", "That", "Those", "It", "One", "Some", "Only", "In",
                   "On", "At", "No", "Many", "All", "Most"}
_SYNONYMS = {"film": "movie", "movie": "film", "films": "movies", "movies": "films", "famous": "well-known",
             "well-known": "famous", "began": "started", "started": "began", "created": "made", "received": "got",
             "award": "prize", "award-winning": "prize-winning", "job": "occupation", "died": "passed away",
             "TV": "television", "picture": "image", "large": "big", "big": "large", "small": "little"}
_TRAILING_PHRASE = re.compile(r"^(?P<head>.+?) (?P<phrase>(?:in|during|since|before|after) (?:the )?"
                              r"(?:\d{4}s?|[A-Z][\w'-]*(?: [A-Z][\w'-]*)*))$")


def _body(claim: str) -> str:
    """The claim without its final full stop."""
    return claim.strip().removesuffix(".").rstrip()


def _embedded(claim: str) -> str:
    """The claim as a clause after other words: a common first word lowercased, proper nouns kept."""
    body = _body(claim)
    first, _, rest = body.partition(" ")
    return (first.lower() + (" " + rest if rest else "")) if first in _COMMON_OPENERS else body


def _prefixed(prefix: str) -> Callable[[str], str | None]:
    return lambda claim: f"{prefix}{_embedded(claim)}."


def _front_phrase(claim: str) -> str | None:
    match = _TRAILING_PHRASE.match(_body(claim))
    if match is None or "," in match["head"]:
        return None
    phrase = match["phrase"]
    return f"{phrase[0].upper()}{phrase[1:]}, {_embedded(match['head'])}."


def _indeed(claim: str) -> str | None:
    words = claim.split(" ")
    verb = next((i for i, word in enumerate(words[1:-1], 1) if word in ("is", "was", "are", "were")), None)
    if verb is None or words[verb + 1] in ("not", "never", "indeed"):
        return None
    return " ".join([*words[: verb + 1], "indeed", *words[verb + 1:]])


def _synonyms(claim: str) -> str | None:
    words = claim.split(" ")
    swapped = [_SYNONYMS.get(word, word) for word in words]
    return " ".join(swapped) if swapped != words else None


#: Rewrites of the claim's own words, taken first where they fit.
REWORDINGS: dict[str, Callable[[str], str | None]] = {
    "front_phrase": _front_phrase,
    "indeed": _indeed,
    "synonyms": _synonyms,
}
#: Attributions, which keep the claim whole.
ATTRIBUTIONS: dict[str, Callable[[str], str | None]] = {
    "according_to": _prefixed("According to Wikipedia, "),
    "it_is_true": _prefixed("It is true that "),
    "reportedly": _prefixed("Reportedly, "),
    "it_is_said": _prefixed("It is said that "),
}


def paraphrases(claim: str, per_claim: int, seed: int) -> list[str]:
    """Up to ``per_claim`` distinct rewrites of ``claim``, drawn by a generator seeded with ``seed`` and the claim."""
    generator = random.Random(f"{seed}:{claim}")
    chosen: list[str] = []
    for rewrites in (REWORDINGS, ATTRIBUTIONS):
        fits = [text for rewrite in rewrites.values() if (text := rewrite(claim)) and text not in (claim, *chosen)]
        fits = list(dict.fromkeys(fits))
        chosen += generator.sample(fits, min(per_claim - len(chosen), len(fits)))
    return chosen


def build(data: Path, output: Path, counts: dict[str, int], per_claim: int, seed: int) -> int:
    """Write the paraphrase file; return how many claims it holds (a claim repeated in FEVER is written once)."""
    rows, seen = [], set()
    for split, count in counts.items():
        lines = (data / f"fever-lite-{split}.jsonl").read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines[:count], 1):
            claim = json.loads(line)["claim"]
            if claim not in seen:
                seen.add(claim)
                rows.append({"claim": claim, "paraphrases": paraphrases(claim, per_claim, seed), "split": split,
                             "line": number})
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of fever-lite-{validation,test}.jsonl")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--validation", type=int, default=2000, help="first N validation claims")
    parser.add_argument("--test", type=int, default=1000, help="first N test claims")
    parser.add_argument("--per-claim", type=int, default=3, help="paraphrases per claim (fewer where fewer fit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = build(args.data, args.output, {"validation": args.validation, "test": args.test}, args.per_claim,
                    args.seed)
    print(f"wrote {written} claims' paraphrases to {args.output}")


if __name__ == "__main__":
    main()
