"""Metrics of generation editing (the MEND paper's WikiText task), as pure functions and torchmetrics metrics.

An edit there makes the model continue a passage with a given 10-token continuation y_e, and its cost is measured
on other passages by perplexity, not by argmax accuracy (no passage is reproduced token for token by argmax).
docs/EVALUATION.md ("WikiText generation editing") states the definitions and where they come from.

* :func:`likelihood_edit_success`: the fraction of edits whose continuation became *more likely* (lower mean NLL
  per token) than before the edit. It asks less than ES's exact match, and more than a lower loss on average.
* :func:`log_likelihood_gain`: the mean, over edits, of how many nats per token the continuation gained.
* :func:`perplexity_drawdown` (re-exported from :mod:`lit_edit.evaluation.metrics`, which already had it):
  ``ppl_post / ppl_pre - 1`` on the out-of-scope passages, perplexity pooled over every token seen, as MEND's
  reference code pools NLL over tokens (``RunningStatAverager``) before taking ``exp``.

Inputs follow :mod:`lit_edit.evaluation.metrics`: aligned ``logits [B, S, V]`` and ``labels [B, S]`` (-100 ignored),
one row one example, a row without labels counts nowhere, and nothing seen gives ``nan``. States are sums reduced
with ``"sum"``, so ``compute`` after several updates equals the function on the concatenated rows.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lit_edit.evaluation.metrics import PerplexityDrawdown, _check_pair, _ratio, perplexity_drawdown
from lit_edit.evaluation.paper_scores import example_nll

__all__ = ["LikelihoodEditSuccess", "LogLikelihoodGain", "PerplexityDrawdown", "likelihood_edit_success",
           "likelihood_gain_counts", "log_likelihood_gain", "log_likelihood_gain_sums", "perplexity_drawdown"]


def _row_gain(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, pre-edit minus post-edit mean NLL per labelled token (nats; positive = more likely after), and
    which rows have a labelled token."""
    _check_pair(pre_logits, post_logits, labels)
    gain = example_nll(pre_logits, labels) - example_nll(post_logits, labels)
    return gain, ~gain.isnan()


def likelihood_gain_counts(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows whose target became more likely, rows)`` as long scalars: the state of :func:`likelihood_edit_success`."""
    gain, counted = _row_gain(pre_logits, post_logits, labels)
    return ((gain > 0) & counted).sum(), counted.sum()


def likelihood_edit_success(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of rows whose target's mean NLL per token is lower after the edit than before; nan with no rows.

    A tie (the edit changed nothing) is not a success.

    >>> import torch
    >>> labels = torch.tensor([[-100, 0], [-100, 0], [-100, -100]])
    >>> pre = torch.zeros(3, 2, 2)  # p(target) = 1/2 on every row
    >>> post = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    >>> likelihood_edit_success(pre, post, labels)  # row 0 rose, row 1 fell, row 2 has no target
    tensor(0.5000)
    """
    return _ratio(*likelihood_gain_counts(pre_logits, post_logits, labels))


def log_likelihood_gain_sums(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(summed per-row gain in nats per token (float64), rows)``: the state of :func:`log_likelihood_gain`."""
    gain, counted = _row_gain(pre_logits, post_logits, labels)
    return torch.where(counted, gain, torch.zeros_like(gain)).to(torch.float64).sum(), counted.sum()


def log_likelihood_gain(pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over rows of (pre-edit minus post-edit) mean NLL per target token, in nats; positive = the edit made
    the targets more likely. Every row weighs the same, however many tokens its target has. nan with no rows.

    >>> import torch
    >>> labels = torch.tensor([[-100, 0]])
    >>> pre = torch.zeros(1, 2, 2)  # p = 1/2
    >>> post = torch.tensor([[[0.0, 0.0], [0.0, -100.0]]])  # p ~ 1
    >>> round(log_likelihood_gain(pre, post, labels).item(), 4)  # ln 2
    0.6931
    """
    return _ratio(*log_likelihood_gain_sums(pre_logits, post_logits, labels))


def _count_state() -> Tensor:
    return torch.tensor(0, dtype=torch.long)


class LikelihoodEditSuccess(Metric):
    """Fraction of edits whose target (a passage's continuation) became more likely: :func:`likelihood_edit_success`.

    >>> import torch
    >>> metric = LikelihoodEditSuccess()
    >>> labels = torch.tensor([[-100, 1]])
    >>> metric.update(torch.zeros(1, 2, 2), torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]), labels)  # rose
    >>> metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), labels)  # unchanged
    >>> metric.compute()
    tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    improved: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("improved", default=_count_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_count_state(), dist_reduce_fx="sum")

    def update(self, pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: pre- and post-edit ``logits [B, S, V]`` on the same aligned ``labels [B, S]``."""
        improved, total = likelihood_gain_counts(pre_logits, post_logits, labels)
        self.improved += improved.to(self.improved.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Fraction of rows whose target became more likely so far; nan with none."""
        return _ratio(self.improved, self.total)


class LogLikelihoodGain(Metric):
    """Mean per-row gain in log-likelihood per target token (nats): :func:`log_likelihood_gain`.

    >>> import torch
    >>> metric = LogLikelihoodGain()
    >>> labels = torch.tensor([[-100, 0]])
    >>> metric.update(torch.zeros(1, 2, 2), torch.tensor([[[0.0, 0.0], [0.0, -100.0]]]), labels)  # + ln 2
    >>> metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), labels)  # + 0
    >>> round(metric.compute().item(), 4)
    0.3466
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    gain: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("gain", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=_count_state(), dist_reduce_fx="sum")

    def update(self, pre_logits: Tensor, post_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: pre- and post-edit ``logits [B, S, V]`` on the same aligned ``labels [B, S]``."""
        gain, total = log_likelihood_gain_sums(pre_logits, post_logits, labels)
        self.gain += gain.to(self.gain.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Mean gain in nats per token so far; nan with no rows."""
        return _ratio(self.gain, self.total)
