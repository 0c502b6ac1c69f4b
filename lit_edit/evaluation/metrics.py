"""Model-editing metrics, as torchmetrics metrics and as pure functions.

Inputs convention (every function and every ``update``):

* ``logits`` is a float tensor ``[batch, seq, vocab]`` and ``labels`` a long tensor ``[batch, seq]``,
  ALREADY ALIGNED: ``logits[:, t]`` predicts ``labels[:, t]``. For a causal LM the caller shifts
  (``logits[:, :-1]`` against ``input_ids[:, 1:]``) before calling anything here.
* Positions whose label is ``-100`` (:data:`IGNORE_INDEX`: prompt and padding) are ignored.
  Every other label must lie in ``[0, vocab)``.
* An *example* is one row. A row with no labelled position is not an example: it counts neither in
  the numerator nor in the denominator of any example-level metric.
* ``pre_logits``/``post_logits`` are the same inputs run through the model before and after the edit;
  they share ``labels``.

Prediction-based metrics use teacher forcing: the argmax at each labelled position is compared with
the label (or with the other model's argmax), given the gold prefix.

Every class keeps only sums (counts, summed NLL in float64, token counts) reduced with ``"sum"``, so
``compute`` after several updates equals the functional value on the concatenated data and
distributed reduction is exact. Results are float32 scalars. Anything computed over zero examples
(or zero labelled tokens) is ``nan``, never an error and never a silent 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "IGNORE_INDEX",
    "AccuracyDrawdown",
    "EditSuccess",
    "PerplexityDrawdown",
    "Retention",
    "TargetNLL",
    "accuracy_drawdown",
    "agreement_counts",
    "correct_counts",
    "edit_success",
    "example_agreement",
    "example_correct",
    "labelled_examples",
    "nll_sum",
    "perplexity",
    "perplexity_drawdown",
    "retention",
    "target_nll",
]

IGNORE_INDEX = -100
"""Label value marking a position that no metric looks at (prompt tokens, padding)."""


# --------------------------------------------------------------------------- validation


def _check_inputs(logits: Tensor, labels: Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is float ``[B, S, V]`` and ``labels`` integer ``[B, S]``."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, seq, vocab], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor, got {logits.dtype}")
    if labels.ndim != 2:
        raise ValueError(f"labels must be [batch, seq], got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [batch, seq]; "
            "align them first (logits[:, t] must predict labels[:, t])"
        )


def _check_pair(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
    """Validate both logits tensors against ``labels`` and against each other."""
    _check_inputs(pre_logits, labels)
    _check_inputs(post_logits, labels)
    if pre_logits.shape != post_logits.shape:
        raise ValueError(
            f"pre_logits {tuple(pre_logits.shape)} and post_logits {tuple(post_logits.shape)} must have the same shape"
        )


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` as a float32 scalar, ``nan`` where the denominator is 0 (no host sync)."""
    num = numerator.to(torch.float64)
    den = denominator.to(torch.float64)
    value = torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))
    return value.to(torch.float32)


# --------------------------------------------------------------------------- per-example helpers


def labelled_examples(labels: Tensor) -> Tensor:
    """BoolTensor ``[batch]``: True for rows with at least one labelled position (the rows that count)."""
    return (labels != IGNORE_INDEX).any(dim=-1)


def _all_labelled_match(predictions: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """True per row where ``predictions == reference`` at every labelled position; False for unlabelled rows."""
    mask = labels != IGNORE_INDEX
    match = (predictions == reference) | ~mask
    return match.all(dim=-1) & mask.any(dim=-1)


def example_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """BoolTensor ``[batch]``: True where the argmax equals the label at every labelled position.

    Teacher-forced exact match of the whole target. Rows with no labelled position are False (they are
    not examples; use :func:`labelled_examples` for the denominator).
    """
    _check_inputs(logits, labels)
    return _all_labelled_match(logits.argmax(dim=-1), labels, labels)


def example_agreement(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """BoolTensor ``[batch]``: True where post-edit and pre-edit argmax agree at every labelled position.

    The labels only select positions; their values are not compared, so this is meaningful even where
    the base model gets the labels wrong. Rows with no labelled position are False.
    """
    _check_pair(pre_logits, post_logits, labels)
    return _all_labelled_match(post_logits.argmax(dim=-1), pre_logits.argmax(dim=-1), labels)


def correct_counts(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(num_correct, num_examples)`` as long scalars: the summable state behind :func:`edit_success`."""
    return example_correct(logits, labels).sum(), labelled_examples(labels).sum()


def agreement_counts(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(num_agreeing, num_examples)`` as long scalars: the summable state behind :func:`retention`."""
    return example_agreement(pre_logits, post_logits, labels).sum(), labelled_examples(labels).sum()


def nll_sum(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(summed_nll, num_tokens)``: float64 sum of per-token NLL over labelled positions, and their count.

    Log-softmax runs in at least float32 (half-precision logits are upcast) on the labelled positions
    only; the sum is accumulated in float64 so that it is exact enough to add up across batches and ranks.
    """
    _check_inputs(logits, labels)
    mask = labels != IGNORE_INDEX
    selected = logits[mask]
    if selected.dtype in (torch.float16, torch.bfloat16):
        selected = selected.float()
    token_nll = F.cross_entropy(selected, labels[mask].long(), reduction="none")
    return token_nll.to(torch.float64).sum(), mask.sum()


def _ppl_drawdown_from_sums(pre_nll: Tensor, post_nll: Tensor, num_tokens: Tensor) -> Tensor:
    """``(ppl_post - ppl_pre) / ppl_pre = exp(mean_post - mean_pre) - 1``; nan with no tokens."""
    den = num_tokens.to(torch.float64)
    diff = (post_nll.to(torch.float64) - pre_nll.to(torch.float64)) / den.clamp_min(1)
    value = torch.where(den > 0, torch.expm1(diff), torch.full_like(diff, float("nan")))
    return value.to(torch.float32)


# --------------------------------------------------------------------------- functional API


def edit_success(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of (in-scope) examples whose target tokens are all predicted correctly; nan if none.

    >>> import torch
    >>> import torch.nn.functional as F
    >>> logits = F.one_hot(torch.tensor([[0, 1, 2], [0, 1, 0], [0, 0, 0]]), num_classes=3).float()  # argmax = ids
    >>> labels = torch.tensor([[-100, 1, 2], [-100, 1, 2], [-100, -100, -100]])
    >>> edit_success(logits, labels)  # row 0 right, row 1 wrong, row 2 has no labels
    tensor(0.5000)
    """
    return _ratio(*correct_counts(logits, labels))


def accuracy_drawdown(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """Pre-edit minus post-edit example accuracy on (out-of-scope) examples; positive = the edit hurt.

    Accuracy is :func:`edit_success` against the given labels. nan if there are no examples.
    """
    _check_pair(pre_logits, post_logits, labels)
    pre_correct, num_examples = correct_counts(pre_logits, labels)
    post_correct, _ = correct_counts(post_logits, labels)
    return _ratio(pre_correct - post_correct, num_examples)


def retention(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of examples whose post-edit argmax equals the pre-edit argmax at every labelled position.

    Measures that the edit left unrelated behaviour unchanged, right or wrong. nan if there are no examples.
    """
    return _ratio(*agreement_counts(pre_logits, post_logits, labels))


def target_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood per labelled token (natural log); nan with no labelled tokens."""
    return _ratio(*nll_sum(logits, labels))


def perplexity(logits: Tensor, labels: Tensor) -> Tensor:
    """``exp`` of the mean NLL per labelled token; nan with no labelled tokens."""
    total, count = nll_sum(logits, labels)
    den = count.to(torch.float64)
    value = torch.where(den > 0, torch.exp(total / den.clamp_min(1)), torch.full_like(total, float("nan")))
    return value.to(torch.float32)


def perplexity_drawdown(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """Relative perplexity increase ``(ppl_post - ppl_pre) / ppl_pre``; positive = the edit hurt.

    Perplexity is ``exp(mean NLL per labelled token)`` over all the data, not a mean of per-row
    perplexities. nan with no labelled tokens.
    """
    _check_pair(pre_logits, post_logits, labels)
    pre_nll, num_tokens = nll_sum(pre_logits, labels)
    post_nll, _ = nll_sum(post_logits, labels)
    return _ppl_drawdown_from_sums(pre_nll, post_nll, num_tokens)


# --------------------------------------------------------------------------- metric classes


def _count_state() -> Tensor:
    return torch.tensor(0, dtype=torch.long)


def _nll_state() -> Tensor:
    return torch.tensor(0.0, dtype=torch.float64)


class EditSuccess(Metric):
    """Fraction of in-scope examples whose target tokens are all predicted correctly (teacher forcing).

    The headline efficacy/generalisation number of an edit: did the edited model produce the new target?
    ``compute`` is nan before any labelled example was seen.

    >>> import torch
    >>> import torch.nn.functional as F
    >>> metric = EditSuccess()
    >>> logits = F.one_hot(torch.tensor([[0, 1, 2], [0, 1, 0]]), num_classes=3).float()
    >>> metric.update(logits, torch.tensor([[-100, 1, 2], [-100, 1, 2]]))  # 1 of 2 rows right
    >>> metric.update(logits[:1], torch.tensor([[-100, -100, 2]]))  # 1 of 1 right
    >>> metric.compute()
    tensor(0.6667)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=_count_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_count_state(), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add one batch of ``logits [B, S, V]`` and aligned ``labels [B, S]``."""
        correct, total = correct_counts(logits, labels)
        self.correct += correct.to(self.correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Fraction of examples fully correct so far; nan with none."""
        return _ratio(self.correct, self.total)


class AccuracyDrawdown(Metric):
    """Pre-edit minus post-edit example accuracy on out-of-scope examples; positive = the edit hurt.

    Locality against gold labels: how many unrelated facts the model knew before the edit and lost.
    ``compute`` is nan before any labelled example was seen.

    >>> import torch
    >>> import torch.nn.functional as F
    >>> metric = AccuracyDrawdown()
    >>> labels = torch.tensor([[-100, 1], [-100, 2], [-100, 0]])
    >>> pre = F.one_hot(torch.tensor([[0, 1], [0, 2], [0, 1]]), num_classes=3).float()  # 2 of 3 right
    >>> post = F.one_hot(torch.tensor([[0, 1], [0, 0], [0, 1]]), num_classes=3).float()  # 1 of 3 right
    >>> metric.update(pre, post, labels)
    >>> metric.compute()
    tensor(0.3333)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    pre_correct: Tensor
    post_correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("pre_correct", default=_count_state(), dist_reduce_fx="sum")
        self.add_state("post_correct", default=_count_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_count_state(), dist_reduce_fx="sum")

    def update(self, pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: pre- and post-edit ``logits [B, S, V]`` on the same aligned ``labels [B, S]``."""
        _check_pair(pre_logits, post_logits, labels)
        pre_correct, total = correct_counts(pre_logits, labels)
        post_correct, _ = correct_counts(post_logits, labels)
        self.pre_correct += pre_correct.to(self.pre_correct.device)
        self.post_correct += post_correct.to(self.post_correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Pre-edit accuracy minus post-edit accuracy so far; nan with no examples."""
        return _ratio(self.pre_correct - self.post_correct, self.total)


class Retention(Metric):
    """Fraction of examples whose post-edit predictions equal the pre-edit ones at every labelled position.

    Locality against the base model itself rather than gold labels, so it also covers facts the base
    model gets wrong. ``compute`` is nan before any labelled example was seen.

    >>> import torch
    >>> import torch.nn.functional as F
    >>> metric = Retention()
    >>> labels = torch.tensor([[-100, 1, 1], [-100, 2, 2], [-100, -100, -100]])  # labels only mark positions
    >>> pre = F.one_hot(torch.tensor([[0, 2, 2], [0, 0, 1], [0, 0, 0]]), num_classes=3).float()
    >>> post = F.one_hot(torch.tensor([[1, 2, 2], [0, 0, 2], [1, 1, 1]]), num_classes=3).float()
    >>> metric.update(pre, post, labels)  # row 0 unchanged where labelled, row 1 changed, row 2 skipped
    >>> metric.compute()
    tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    agreeing: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("agreeing", default=_count_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_count_state(), dist_reduce_fx="sum")

    def update(self, pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: pre- and post-edit ``logits [B, S, V]`` on the same aligned ``labels [B, S]``."""
        agreeing, total = agreement_counts(pre_logits, post_logits, labels)
        self.agreeing += agreeing.to(self.agreeing.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Fraction of examples with unchanged predictions so far; nan with none."""
        return _ratio(self.agreeing, self.total)


class TargetNLL(Metric):
    """Mean negative log-likelihood (nats) per labelled token.

    A smooth companion to :class:`EditSuccess`: how strongly the model prefers the target, not just whether
    it wins the argmax. Token-weighted over everything seen; nan before any labelled token was seen.

    >>> import torch
    >>> metric = TargetNLL()
    >>> metric.update(torch.zeros(2, 3, 4), torch.tensor([[-100, 1, 2], [-100, -100, 3]]))  # uniform over 4
    >>> metric.compute()  # log(4)
    tensor(1.3863)
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    nll: Tensor
    tokens: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("nll", default=_nll_state(), dist_reduce_fx="sum")
        self.add_state("tokens", default=_count_state(), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add one batch of ``logits [B, S, V]`` and aligned ``labels [B, S]``."""
        nll, tokens = nll_sum(logits, labels)
        self.nll += nll.to(self.nll.device)
        self.tokens += tokens.to(self.tokens.device)

    def compute(self) -> Tensor:
        """Mean NLL per labelled token so far; nan with none."""
        return _ratio(self.nll, self.tokens)


class PerplexityDrawdown(Metric):
    """Relative perplexity increase ``(ppl_post - ppl_pre) / ppl_pre`` on the labelled tokens; positive = worse.

    Perplexity is ``exp(mean NLL per labelled token)`` over everything seen (not a mean of per-batch
    perplexities), so the value does not depend on how the data was batched or sharded. Typically fed
    with general text to check that the edit did not damage the language model. nan before any
    labelled token was seen.

    >>> import torch
    >>> metric = PerplexityDrawdown()
    >>> labels = torch.tensor([[-100, 0, 0]])
    >>> pre = torch.zeros(1, 3, 4)  # uniform over 4 tokens: perplexity 4
    >>> post = torch.tensor([0.125, 0.875 / 3, 0.875 / 3, 0.875 / 3]).log().expand(1, 3, 4)  # p(target) = 1/8
    >>> metric.update(pre, post, labels)
    >>> round(metric.compute().item(), 4)  # (8 - 4) / 4
    1.0
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = -1.0

    pre_nll: Tensor
    post_nll: Tensor
    tokens: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("pre_nll", default=_nll_state(), dist_reduce_fx="sum")
        self.add_state("post_nll", default=_nll_state(), dist_reduce_fx="sum")
        self.add_state("tokens", default=_count_state(), dist_reduce_fx="sum")

    def update(self, pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: pre- and post-edit ``logits [B, S, V]`` on the same aligned ``labels [B, S]``."""
        _check_pair(pre_logits, post_logits, labels)
        pre_nll, tokens = nll_sum(pre_logits, labels)
        post_nll, _ = nll_sum(post_logits, labels)
        self.pre_nll += pre_nll.to(self.pre_nll.device)
        self.post_nll += post_nll.to(self.post_nll.device)
        self.tokens += tokens.to(self.tokens.device)

    def compute(self) -> Tensor:
        """Relative perplexity change so far; nan with no labelled tokens."""
        return _ppl_drawdown_from_sums(self.pre_nll, self.post_nll, self.tokens)
