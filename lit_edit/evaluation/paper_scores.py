"""The scores other papers report, beside this project's ES and DD, so results can be compared with theirs.

* **CounterFact** (ROME, Meng et al. 2022) compares the probabilities of two targets instead of asking for the
  argmax: *efficacy* is the fraction of edit prompts where the new target is more likely than the true one,
  *paraphrase score* the same on paraphrases, *neighbourhood score* the fraction of neighbouring prompts (same
  relation, other subject, same true object) where the true object stays more likely than the new one. A
  target's likelihood is its mean NLL per token, as in ROME's evaluation code. These are easier to pass than ES,
  which needs every target token to be the argmax.
* **Token accuracy** (EasyEdit's rewrite accuracy, used for zsRE): the fraction of a target's tokens that are the
  teacher-forced argmax, averaged over examples. ES counts an example only when all its tokens are right.

* **Consistency** (ROME's reference score): the TF-IDF cosine similarity between what the model generates after the
  edit and reference texts about the new target (ROME: Wikipedia snippets about subjects that truly have it).
  TF-IDF follows scikit-learn's defaults that ROME uses (lower-cased words of two or more characters, raw counts,
  smoothed IDF ``ln((1 + n) / (1 + df)) + 1``); the IDF is fitted on the run's reference texts, not on Wikipedia.
* **Fluency** (ROME's generation entropy): the weighted mean of the bigram and trigram entropies (bits; weights
  2/3 and 4/3) of a greedy generation after the edit; repetitive text ("Picasso Picasso Picasso") scores low.
  Words are split on word characters and punctuation (ROME uses NLTK's tokenizer), and the text generated is
  the continuation of the edit prompt and its paraphrases (ROME uses CounterFact's separate generation prompts).

Same input conventions as :mod:`lit_edit.evaluation.metrics` (aligned logits, ``-100`` for positions no metric looks at).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from lit_edit.evaluation.metrics import IGNORE_INDEX, _check_inputs, _ratio, labelled_examples

__all__ = [
    "Consistency",
    "Fluency",
    "TargetPreference",
    "TokenAccuracy",
    "example_nll",
    "inverse_document_frequencies",
    "ngram_entropy",
    "preference",
    "tfidf_cosine",
    "token_accuracy",
]


def example_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Float ``[batch]``: each row's mean NLL per labelled token (nan for a row with none).

    >>> example_nll(torch.zeros(1, 2, 4), torch.tensor([[-100, 3]]))  # uniform over 4 tokens
    tensor([1.3863])
    """
    _check_inputs(logits, labels)
    mask = labels != IGNORE_INDEX
    log_probs = F.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    total = -(picked * mask).sum(dim=-1)
    count = mask.sum(dim=-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def preference(nll_preferred: Tensor, nll_other: Tensor) -> Tensor:
    """Fraction of rows where the preferred target is the more likely one (lower mean NLL); nan for no rows.

    >>> preference(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 1.0]))
    tensor(0.5000)
    """
    wins, total = _preference_counts(nll_preferred, nll_other)
    return _ratio(wins, total)


def _preference_counts(nll_preferred: Tensor, nll_other: Tensor) -> tuple[Tensor, Tensor]:
    if nll_preferred.shape != nll_other.shape:
        raise ValueError(f"the two targets' NLLs must pair up, got {tuple(nll_preferred.shape)} and "
                         f"{tuple(nll_other.shape)}")
    valid = ~(nll_preferred.isnan() | nll_other.isnan())
    return ((nll_preferred < nll_other) & valid).sum(), valid.sum()


def token_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over examples of the fraction of labelled tokens whose argmax is the label (EasyEdit's accuracy).

    >>> logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # predicts token 1, then token 0
    >>> token_accuracy(logits, torch.tensor([[1, 1]]))
    tensor(0.5000)
    """
    total, examples = _token_accuracy_sums(logits, labels)
    return _ratio(total, examples)


def _token_accuracy_sums(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    _check_inputs(logits, labels)
    mask = labels != IGNORE_INDEX
    right = ((logits.argmax(dim=-1) == labels) & mask).sum(dim=-1).to(torch.float64)
    rows = labelled_examples(labels)
    per_example = right / mask.sum(dim=-1).clamp_min(1)
    return per_example[rows].sum(), rows.sum()


class TargetPreference(Metric):
    """Fraction of prompts where one target is more likely than the other (CounterFact's scores).

    >>> metric = TargetPreference()
    >>> metric.update(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 1.0]))
    >>> metric.update(torch.tensor([0.1]), torch.tensor([0.2]))
    >>> metric.compute()
    tensor(0.6667)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    wins: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("wins", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_preferred: Tensor, nll_other: Tensor) -> None:
        wins, total = _preference_counts(nll_preferred, nll_other)
        self.wins += wins.to(self.wins.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        return _ratio(self.wins, self.total)


class TokenAccuracy(Metric):
    """:func:`token_accuracy` over everything seen: per-example token accuracy, averaged over examples."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    accuracy_sum: Tensor
    examples: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("accuracy_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        total, examples = _token_accuracy_sums(logits, labels)
        self.accuracy_sum += total.to(self.accuracy_sum.device)
        self.examples += examples.to(self.examples.device)

    def compute(self) -> Tensor:
        return _ratio(self.accuracy_sum, self.examples)


_WORDS = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's fluency of one text: the mean over ``ns`` of weight x the entropy (bits) of its n-gram frequencies.

    >>> round(ngram_entropy("a b c d"), 4)  # (2/3 * log2(3) + 4/3 * log2(2)) / 2: 3 bigrams, 2 trigrams
    1.195
    >>> ngram_entropy("Picasso Picasso Picasso Picasso")  # one bigram, one trigram
    0.0
    """
    words = _WORDS.findall(text)
    terms = []
    for n, weight in zip(ns, weights, strict=True):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        terms.append(weight * entropy)
    return sum(terms) / len(terms)


class Fluency(Metric):
    """Mean :func:`ngram_entropy` over the generated texts seen."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    entropy_sum: Tensor
    texts: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("entropy_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("texts", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, texts: list[str]) -> None:
        self.entropy_sum += sum(ngram_entropy(text) for text in texts)
        self.texts += len(texts)

    def compute(self) -> Tensor:
        return _ratio(self.entropy_sum, self.texts)


_TFIDF_WORDS = re.compile(r"\b\w\w+\b")


def inverse_document_frequencies(documents: list[str]) -> dict[str, float]:
    """Smoothed IDF of every word of ``documents``: ``ln((1 + n) / (1 + df)) + 1``.

    >>> idf = inverse_document_frequencies(["Paris is big", "Paris is old"])
    >>> round(idf["paris"], 4), round(idf["big"], 4)  # in both documents; in one of two
    (1.0, 1.4055)
    """
    frequency = Counter(word for document in documents for word in set(_TFIDF_WORDS.findall(document.lower())))
    n = len(documents)
    return {word: math.log((1 + n) / (1 + df)) + 1.0 for word, df in frequency.items()}


def tfidf_cosine(text: str, reference: str, idf: dict[str, float]) -> float:
    """Cosine similarity of the two texts' TF-IDF vectors; words without an IDF (never seen when fitting) count for
    nothing, as in a fitted vectorizer. 0 when either text has no known word.

    >>> idf = inverse_document_frequencies(["Paris is big", "Paris is old"])
    >>> tfidf_cosine("big Paris", "Paris is big", idf) > tfidf_cosine("old Paris", "Paris is big", idf)
    True
    """
    vectors = []
    for words in (_TFIDF_WORDS.findall(text.lower()), _TFIDF_WORDS.findall(reference.lower())):
        vectors.append({word: count * idf[word] for word, count in Counter(words).items() if word in idf})
    a, b = vectors
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return sum(value * b.get(word, 0.0) for word, value in a.items()) / norm if norm else 0.0


class Consistency(Metric):
    """Mean :func:`tfidf_cosine` between generated texts and their reference texts."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    similarity_sum: Tensor
    texts: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("similarity_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("texts", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, texts: list[str], references: list[str], idf: dict[str, float]) -> None:
        if len(texts) != len(references):
            raise ValueError(f"{len(texts)} generated texts but {len(references)} references")
        self.similarity_sum += sum(tfidf_cosine(text, ref, idf) for text, ref in zip(texts, references, strict=True))
        self.texts += len(texts)

    def compute(self) -> Tensor:
        return _ratio(self.similarity_sum, self.texts)
