"""Tests for lit_edit.metrics: hand-computed values, batching/reset, a loop reference, and gloo DDP sync."""

from __future__ import annotations

import math
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_sum

from lit_edit.metrics import (
    IGNORE_INDEX,
    AccuracyDrawdown,
    EditSuccess,
    PerplexityDrawdown,
    Retention,
    TargetNLL,
    accuracy_drawdown,
    agreement_counts,
    correct_counts,
    edit_success,
    example_agreement,
    example_correct,
    labelled_examples,
    nll_sum,
    perplexity,
    perplexity_drawdown,
    retention,
    target_nll,
)

X = IGNORE_INDEX
V = 4  # vocabulary size of the hand-built examples


def argmax_logits(ids: list[list[int]], vocab: int = V) -> Tensor:
    """Logits [B, S, vocab] whose argmax at each position is the given id (plus noise that never flips it)."""
    ids_t = torch.tensor(ids)
    noise = torch.rand(*ids_t.shape, vocab, generator=torch.Generator().manual_seed(0))
    return F.one_hot(ids_t, vocab).float() * 5.0 + noise - 2.0


def prob_logits(rows: list[list[tuple[int, float]]], vocab: int = V, shift: float = 3.0) -> Tensor:
    """Logits [B, S, vocab] where position (b, s) gives probability p to token t; the rest shares 1 - p evenly.

    ``shift`` is added everywhere: the metrics must be invariant to it (they use a log-softmax).
    """
    out = torch.empty(len(rows), len(rows[0]), vocab, dtype=torch.float64)
    for b, row in enumerate(rows):
        for s, (token, p) in enumerate(row):
            probs = torch.full((vocab,), (1.0 - p) / (vocab - 1), dtype=torch.float64)
            probs[token] = p
            out[b, s] = probs.log() + shift
    return out.float()


# ---------------------------------------------------------------------- hand-built example for argmax metrics
# Row 0: all labelled positions right (the ignored position 0 predicts 0 while... it is ignored anyway).
# Row 1: one labelled position wrong (last: predicts 0, label 3).
# Row 2: no labelled position -> not an example.
# Row 3: the only labelled position right; the ignored positions are "wrong" and must not matter.
LABELS = torch.tensor(
    [
        [X, 1, 2, 3],
        [X, 1, 2, 3],
        [X, X, X, X],
        [X, 2, X, X],
    ]
)
PRE_IDS = [
    [0, 1, 2, 3],
    [0, 1, 2, 0],
    [1, 1, 1, 1],
    [0, 2, 3, 1],
]


def test_labelled_examples() -> None:
    assert labelled_examples(LABELS).tolist() == [True, True, False, True]


def test_example_correct_and_edit_success_by_hand() -> None:
    logits = argmax_logits(PRE_IDS)
    assert example_correct(logits, LABELS).tolist() == [True, False, False, True]
    num_correct, num_examples = correct_counts(logits, LABELS)
    assert (num_correct.item(), num_examples.item()) == (2, 3)
    assert edit_success(logits, LABELS).item() == pytest.approx(2 / 3)


def test_edit_success_all_right_and_all_wrong() -> None:
    assert edit_success(argmax_logits([[0, 1, 2, 3]]), torch.tensor([[X, 1, 2, 3]])).item() == 1.0
    # a single wrong token makes the whole example wrong
    assert edit_success(argmax_logits([[0, 1, 2, 0]]), torch.tensor([[X, 1, 2, 3]])).item() == 0.0


def test_accuracy_drawdown_by_hand() -> None:
    pre_labels = torch.tensor([[X, 1, 2, 3], [X, 1, 2, 0], [X, X, X, X], [X, 2, X, X]])
    pre = argmax_logits(PRE_IDS)  # against pre_labels: rows 0, 1, 3 right -> 3/3
    post = argmax_logits([[0, 1, 2, 3], [0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 3, 1]])  # only row 0 right -> 1/3
    assert accuracy_drawdown(pre, post, pre_labels).item() == pytest.approx(3 / 3 - 1 / 3)
    # the edit helping gives a negative drawdown
    assert accuracy_drawdown(post, pre, pre_labels).item() == pytest.approx(-2 / 3)
    assert accuracy_drawdown(pre, pre, pre_labels).item() == 0.0


def test_retention_by_hand() -> None:
    pre = argmax_logits(PRE_IDS)
    post = argmax_logits(
        [
            [3, 1, 2, 3],  # differs only at the ignored position 0 -> retained
            [0, 1, 3, 0],  # differs at labelled position 2 -> not retained
            [2, 2, 2, 2],  # no labelled position -> not counted
            [1, 2, 0, 0],  # equal at the labelled position -> retained
        ]
    )
    assert example_agreement(pre, post, LABELS).tolist() == [True, False, False, True]
    agreeing, total = agreement_counts(pre, post, LABELS)
    assert (agreeing.item(), total.item()) == (2, 3)
    assert retention(pre, post, LABELS).item() == pytest.approx(2 / 3)


def test_token_retention_by_hand() -> None:
    """EasyEdit's locality: per example, the share of labelled positions whose argmax is unchanged; then the mean."""
    from lit_edit.editors.base import unedited_predictions
    from lit_edit.paper_scores import token_accuracy

    pre = argmax_logits(PRE_IDS)
    post = argmax_logits([[0, 1, 0, 3], [0, 0, 0, 1], [2, 2, 2, 2], [1, 2, 0, 0]])
    # row 0: 2 of 3 labelled positions unchanged; row 1: 0 of 3; row 2: no labelled position; row 3: 1 of 1
    assert unedited_predictions(pre, LABELS).tolist() == [[X, 1, 2, 3], [X, 1, 2, 0], [X, X, X, X], [X, 2, X, X]]
    assert token_accuracy(post, unedited_predictions(pre, LABELS)).item() == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_retention_ignores_label_values() -> None:
    """Retention compares post with pre, so it is meaningful where the base model gets the labels wrong."""
    pre = argmax_logits([[0, 1, 2], [0, 3, 3]])
    post = argmax_logits([[0, 1, 2], [0, 3, 1]])
    wrong_labels = torch.tensor([[X, 0, 0], [X, 0, 0]])  # pre gets every label wrong
    assert edit_success(pre, wrong_labels).item() == 0.0
    assert retention(pre, post, wrong_labels).item() == pytest.approx(1 / 2)
    # only the positions matter: ignoring the last position makes row 1 retained too
    assert retention(pre, post, torch.tensor([[X, 0, X], [X, 0, X]])).item() == 1.0


# ---------------------------------------------------------------------- hand-built example for NLL metrics
NLL_LABELS = torch.tensor([[X, 0, 1], [X, X, X], [X, X, 3]])
# pre: p(target) = 1/2, 1/4 on row 0 and 1/8 on row 2 -> NLL = ln2, 2 ln2, 3 ln2 -> mean 2 ln2, perplexity 4
PRE_NLL_LOGITS = prob_logits(
    [
        [(2, 0.9), (0, 0.5), (1, 0.25)],
        [(0, 0.1), (1, 0.2), (2, 0.3)],  # unlabelled row: whatever it says must not count
        [(1, 0.7), (2, 0.6), (3, 0.125)],
    ]
)
# post: p(target) = 1/16 everywhere -> mean NLL 4 ln2, perplexity 16
POST_NLL_LOGITS = prob_logits(
    [
        [(2, 0.9), (0, 1 / 16), (1, 1 / 16)],
        [(0, 0.9), (1, 0.9), (2, 0.9)],
        [(1, 0.7), (2, 0.6), (3, 1 / 16)],
    ]
)


def test_nll_sum_by_hand() -> None:
    total, tokens = nll_sum(PRE_NLL_LOGITS, NLL_LABELS)
    assert total.dtype == torch.float64
    assert tokens.item() == 3
    assert total.item() == pytest.approx(6 * math.log(2), rel=1e-5)


def test_target_nll_and_perplexity_by_hand() -> None:
    assert target_nll(PRE_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(2 * math.log(2), rel=1e-5)
    assert target_nll(POST_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(4 * math.log(2), rel=1e-5)
    assert perplexity(PRE_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(4.0, rel=1e-5)
    assert perplexity(POST_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(16.0, rel=1e-5)


def test_perplexity_drawdown_by_hand() -> None:
    # (16 - 4) / 4 = 3; the reverse direction: (4 - 16) / 16 = -0.75
    assert perplexity_drawdown(PRE_NLL_LOGITS, POST_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(3.0, rel=1e-5)
    assert perplexity_drawdown(POST_NLL_LOGITS, PRE_NLL_LOGITS, NLL_LABELS).item() == pytest.approx(-0.75, rel=1e-5)
    assert perplexity_drawdown(PRE_NLL_LOGITS, PRE_NLL_LOGITS, NLL_LABELS).item() == 0.0


def test_perplexity_is_token_weighted_not_row_averaged() -> None:
    # row 0: one token with p = 1/2; row 1: three tokens with p = 1/8 -> mean NLL (1 + 9) ln2 / 4 = 2.5 ln2
    logits = prob_logits([[(0, 0.5), (0, 0.5), (0, 0.5)], [(1, 0.125), (1, 0.125), (1, 0.125)]])
    labels = torch.tensor([[X, X, 0], [1, 1, 1]])
    assert target_nll(logits, labels).item() == pytest.approx(2.5 * math.log(2), rel=1e-5)
    assert perplexity(logits, labels).item() == pytest.approx(2**2.5, rel=1e-5)


def test_half_precision_logits_are_upcast() -> None:
    logits = PRE_NLL_LOGITS.to(torch.bfloat16)
    expected = target_nll(logits.float(), NLL_LABELS)
    torch.testing.assert_close(target_nll(logits, NLL_LABELS), expected)


# ---------------------------------------------------------------------- no examples -> nan


def test_functionals_return_nan_without_labelled_positions() -> None:
    labels = torch.full((2, 3), X)
    logits = torch.randn(2, 3, V)
    assert example_correct(logits, labels).tolist() == [False, False]
    for value in (
        edit_success(logits, labels),
        accuracy_drawdown(logits, logits, labels),
        retention(logits, logits, labels),
        target_nll(logits, labels),
        perplexity(logits, labels),
        perplexity_drawdown(logits, logits, labels),
    ):
        assert value.ndim == 0 and torch.isnan(value)


def test_functionals_return_nan_on_empty_batch() -> None:
    logits, labels = torch.randn(0, 3, V), torch.zeros(0, 3, dtype=torch.long)
    assert torch.isnan(edit_success(logits, labels))
    assert torch.isnan(target_nll(logits, labels))


@pytest.mark.parametrize("metric_cls", [EditSuccess, AccuracyDrawdown, Retention, TargetNLL, PerplexityDrawdown])
def test_metric_compute_without_examples_is_nan(metric_cls: type[Metric]) -> None:
    metric = metric_cls()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    metric.reset()
    args = _args_for(metric, torch.randn(2, 3, V), torch.randn(2, 3, V), torch.full((2, 3), X))
    metric.update(*args)
    assert torch.isnan(metric.compute())


# ---------------------------------------------------------------------- validation


def test_shape_and_dtype_validation() -> None:
    logits = torch.randn(2, 3, V)
    with pytest.raises(ValueError, match="disagree"):
        edit_success(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        target_nll(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[batch, seq, vocab\]"):
        edit_success(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        retention(logits, torch.randn(2, 3, V + 1), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="float"):
        EditSuccess().update(torch.zeros(2, 3, V, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------------- random data, reference, classes


def random_data(seed: int, batch: int = 64, seq: int = 5, vocab: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """(pre_logits, post_logits, labels): some rows unlabelled, a mix of right/wrong and kept/changed rows."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    prompt_len = torch.randint(0, seq + 1, (batch,), generator=gen)  # seq -> row has no label
    prompt_len[:3] = seq  # guarantee a few unlabelled rows
    labels[torch.arange(seq) < prompt_len[:, None]] = X
    pre = torch.randn(batch, seq, vocab, generator=gen) * 2
    confident = torch.rand(batch, generator=gen) < 0.5
    pre = pre + 5.0 * confident[:, None, None] * F.one_hot(labels.clamp_min(0), vocab)
    changed = torch.rand(batch, generator=gen) < 0.4
    post = pre + 3.0 * changed[:, None, None] * torch.randn(batch, seq, vocab, generator=gen)
    return pre, post, labels


def reference(pre: Tensor, post: Tensor, labels: Tensor) -> dict[str, float]:
    """Plain-python loops, independent of the module under test."""

    def argmax(row: list[float]) -> int:
        return max(range(len(row)), key=lambda i: row[i])

    def nll(row: list[float], target: int) -> float:
        top = max(row)
        return top + math.log(sum(math.exp(v - top) for v in row)) - row[target]

    pre_l, post_l, lab = pre.tolist(), post.tolist(), labels.tolist()
    n_ex = pre_ok = post_ok = kept = 0
    n_tok = 0
    pre_nll = post_nll = 0.0
    for b in range(len(lab)):
        positions = [t for t in range(len(lab[b])) if lab[b][t] != X]
        if not positions:
            continue
        n_ex += 1
        pre_ok += all(argmax(pre_l[b][t]) == lab[b][t] for t in positions)
        post_ok += all(argmax(post_l[b][t]) == lab[b][t] for t in positions)
        kept += all(argmax(post_l[b][t]) == argmax(pre_l[b][t]) for t in positions)
        for t in positions:
            n_tok += 1
            pre_nll += nll(pre_l[b][t], lab[b][t])
            post_nll += nll(post_l[b][t], lab[b][t])
    pre_ppl, post_ppl = math.exp(pre_nll / n_tok), math.exp(post_nll / n_tok)
    return {
        "edit_success": post_ok / n_ex,
        "accuracy_drawdown": (pre_ok - post_ok) / n_ex,
        "retention": kept / n_ex,
        "target_nll": post_nll / n_tok,
        "perplexity_drawdown": (post_ppl - pre_ppl) / pre_ppl,
    }


def functional_values(pre: Tensor, post: Tensor, labels: Tensor) -> dict[str, float]:
    return {
        "edit_success": edit_success(post, labels).item(),
        "accuracy_drawdown": accuracy_drawdown(pre, post, labels).item(),
        "retention": retention(pre, post, labels).item(),
        "target_nll": target_nll(post, labels).item(),
        "perplexity_drawdown": perplexity_drawdown(pre, post, labels).item(),
    }


METRIC_CLASSES: dict[str, type[Metric]] = {
    "edit_success": EditSuccess,
    "accuracy_drawdown": AccuracyDrawdown,
    "retention": Retention,
    "target_nll": TargetNLL,
    "perplexity_drawdown": PerplexityDrawdown,
}


def _args_for(metric: Metric, pre: Tensor, post: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """Single-model metrics see the post-edit logits; pairwise ones see both."""
    if isinstance(metric, (EditSuccess, TargetNLL)):
        return post, labels
    return pre, post, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_functionals_match_loop_reference(seed: int) -> None:
    pre, post, labels = random_data(seed)
    expected = reference(pre, post, labels)
    got = functional_values(pre, post, labels)
    # the data is not degenerate: every metric is strictly between its extremes
    assert 0 < expected["edit_success"] < 1 and 0 < expected["retention"] < 1
    assert expected["accuracy_drawdown"] != 0 and expected["perplexity_drawdown"] != 0
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("name", list(METRIC_CLASSES))
def test_metric_several_updates_equal_functional_on_concatenation(name: str) -> None:
    pre, post, labels = random_data(3)
    metric = METRIC_CLASSES[name]()
    for lo, hi in [(0, 5), (5, 6), (6, 40), (40, 64)]:  # uneven batches, first one all unlabelled rows
        metric.update(*_args_for(metric, pre[lo:hi], post[lo:hi], labels[lo:hi]))
    value = metric.compute()
    assert value.ndim == 0 and value.dtype == torch.float32
    assert value.item() == pytest.approx(functional_values(pre, post, labels)[name], rel=1e-6, abs=1e-7)
    assert value.item() == pytest.approx(reference(pre, post, labels)[name], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", list(METRIC_CLASSES))
def test_metric_reset(name: str) -> None:
    pre_a, post_a, labels_a = random_data(4)
    pre_b, post_b, labels_b = random_data(5)
    metric = METRIC_CLASSES[name]()
    metric.update(*_args_for(metric, pre_a, post_a, labels_a))
    before = metric.compute().item()
    metric.reset()
    for state in metric.metric_state.values():
        assert state.item() == 0
    metric.update(*_args_for(metric, pre_b, post_b, labels_b))
    after = metric.compute().item()
    expected_b = functional_values(pre_b, post_b, labels_b)[name]
    assert after == pytest.approx(expected_b, rel=1e-6, abs=1e-7)
    assert before != pytest.approx(after)  # so the check above could tell a missing reset


@pytest.mark.parametrize("name", list(METRIC_CLASSES))
def test_metric_forward_returns_batch_value_and_accumulates(name: str) -> None:
    pre, post, labels = random_data(6)
    metric = METRIC_CLASSES[name]()
    batch_value = metric(*_args_for(metric, pre[:30], post[:30], labels[:30]))
    expected_batch = functional_values(pre[:30], post[:30], labels[:30])[name]
    assert batch_value.item() == pytest.approx(expected_batch, rel=1e-6, abs=1e-7)
    metric(*_args_for(metric, pre[30:], post[30:], labels[30:]))
    assert metric.compute().item() == pytest.approx(functional_values(pre, post, labels)[name], rel=1e-6, abs=1e-7)


def test_states_are_sums_with_float64_nll() -> None:
    for metric in (TargetNLL(), PerplexityDrawdown()):
        for key, state in metric.metric_state.items():
            expected_dtype = torch.long if key == "tokens" else torch.float64
            assert state.dtype == expected_dtype, key
    for metric_cls in METRIC_CLASSES.values():
        metric = metric_cls()
        assert metric.full_state_update is False
        assert all(fx is dim_zero_sum for fx in metric._reductions.values()), metric_cls.__name__


def test_higher_is_better_flags() -> None:
    assert EditSuccess.higher_is_better and Retention.higher_is_better
    assert not AccuracyDrawdown.higher_is_better
    assert not TargetNLL.higher_is_better and not PerplexityDrawdown.higher_is_better


# ---------------------------------------------------------------------- distributed (gloo, 2 CPU processes)

DIST_SEED = 7
DIST_SPLIT = 23  # rank 0 gets rows [:23], rank 1 rows [23:] (uneven on purpose)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dist_worker(rank: int, world_size: int, port: int, expected: dict[str, float]) -> None:
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        pre, post, labels = random_data(DIST_SEED)
        rows = slice(0, DIST_SPLIT) if rank == 0 else slice(DIST_SPLIT, None)
        pre, post, labels = pre[rows], post[rows], labels[rows]
        for name, metric_cls in METRIC_CLASSES.items():
            metric = metric_cls()
            if rank == 0:
                metric.update(*_args_for(metric, pre, post, labels))
            else:  # two updates on this rank
                metric.update(*_args_for(metric, pre[:10], post[:10], labels[:10]))
                metric.update(*_args_for(metric, pre[10:], post[10:], labels[10:]))
            value = metric.compute().item()
            assert value == pytest.approx(expected[name], rel=1e-6, abs=1e-7), (rank, name, value, expected[name])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_distributed_two_ranks_equal_single_process() -> None:
    pre, post, labels = random_data(DIST_SEED)
    expected = functional_values(pre, post, labels)
    # a rank that did not sync would report its own half, which differs from the global value
    half = functional_values(pre[:DIST_SPLIT], post[:DIST_SPLIT], labels[:DIST_SPLIT])
    assert any(half[name] != pytest.approx(expected[name]) for name in expected)
    assert all(half[name] != pytest.approx(expected[name]) for name in ("edit_success", "target_nll"))
    mp.spawn(_dist_worker, args=(2, _free_port(), expected), nprocs=2, join=True)
