"""The MLP as a linear associative memory (ROME, MEMIT): keys at the subject's last token, target values
found by optimisation, and the least-squares weight update that stores them.

An MLP output projection W maps keys k (its input) to values v = W k. To make the model say a new
object for a subject, ROME and MEMIT (1) read the key the subject produces, averaged over a few random
prefixes so it does not depend on the exact wording; (2) find by gradient descent an added vector δ at one
module's output, at the subject's last token, that makes the model predict the new target; (3) change W so
that the key now produces the new value, disturbing other keys as little as C = E[kkᵀ] allows.
Everything is functional: forward passes substitute ``params`` and the base model is never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_edit.data.batch import IGNORE_INDEX, PromptTokenizer, TokenizedExamples
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.evaluation.paper_scores import example_nll
from lit_edit.mechanics.edited_model import EditFailedError, EditRefusedError, aligned_logits
from lit_edit.mechanics.hooks import captured, output_shifted, stopping_after
from lit_edit.mechanics.prefix_cache import StackedPrefixes, read_stacked
from lit_edit.mechanics.settings import require_at_least, require_non_negative, require_positive
from lit_edit.mechanics.subject_tokens import subject_token_span


@dataclass(frozen=True)
class FactRequest:
    """One fact to write: ``prompt`` (containing ``subject``) should be completed by ``target``."""

    prompt: str
    subject: str
    target: str

    @classmethod
    def from_record(cls, record: EditRecord) -> FactRequest:
        if not record.subject:
            raise EditRefusedError(f"edit {record.case_id} has no subject: ROME and MEMIT need to know which tokens "
                                   f"of {record.prompt!r} name the subject; the model was left unchanged")
        return cls(record.prompt, record.subject, record.target_new)


@dataclass
class TargetOptimisation:
    """How the target value is searched for (ROME's defaults)."""

    steps: int = 25
    """Adam steps on δ."""
    lr: float = 0.5
    """Adam learning rate."""
    kl_weight: float = 0.0625
    """Weight of KL(original ‖ edited) on "{subject} is a": keeps what else the model says about the subject."""
    weight_decay: float = 0.5
    """Penalty on ‖δ‖² / ‖v₀‖²."""
    clamp_norm: float = 4.0
    """‖δ‖ is kept within this multiple of ‖v₀‖."""
    stop_nll: float = 0.05
    """A fact's search stops once its mean target NLL (over its contexts) is below this."""

    def validate(self, owner: str) -> None:
        """Refuse settings out of range, naming them as ``owner``'s ``target`` (:mod:`lit_edit.mechanics.settings`)."""
        require_at_least(owner, "target.steps", self.steps, 1)
        require_positive(owner, "target.lr", self.lr)
        require_non_negative(owner, "target.kl_weight", self.kl_weight)
        require_non_negative(owner, "target.weight_decay", self.weight_decay)
        require_positive(owner, "target.clamp_norm", self.clamp_norm)
        require_non_negative(owner, "target.stop_nll", self.stop_nll)


@dataclass
class FactRows:
    """Every fact in every context: tokenized rows, the subject's last token per row, the fact each row is of."""

    examples: TokenizedExamples
    subject_position: Tensor
    fact: Tensor
    unprefixed: Tensor  # per fact: the row of its own prompt without a prefix

    def to(self, device: torch.device | str) -> FactRows:
        return FactRows(self.examples.to(device), self.subject_position.to(device), self.fact.to(device),
                        self.unprefixed.to(device))


def fact_rows(prompts: PromptTokenizer, requests: Sequence[FactRequest], prefixes: Sequence[str]) -> FactRows:
    """Each request's prompt after each prefix ("" first), labelled with its target."""
    pairs: list[LabeledPrompt] = []
    positions: list[int] = []
    owners: list[int] = []
    unprefixed: list[int] = []
    for index, request in enumerate(requests):
        try:
            target_length = len(prompts.target_ids(request.target))
        except ValueError as error:  # a target that tokenizes to nothing or leaves no room: this edit is refused
            raise EditRefusedError(f"{error}; the model was left unchanged") from error
        for prefix in ("", *prefixes):
            text = f"{prefix} {request.prompt}" if prefix else request.prompt
            length = len(prompts.prompt_ids(text)) + target_length
            if length > prompts.max_length:
                raise EditRefusedError(f"edit prompt {text!r} with its target is {length} tokens, more than "
                                       f"max_length {prompts.max_length}; the model was left unchanged")
            if not prefix:
                unprefixed.append(len(pairs))
            pairs.append(LabeledPrompt(text, request.target))
            positions.append(subject_token_span(prompts.tokenizer, text, request.subject)[1] - 1)
            owners.append(index)
    return FactRows(prompts(pairs), torch.tensor(positions), torch.tensor(owners), torch.tensor(unprefixed))


def essence_rows(tokenizer: PreTrainedTokenizerBase, requests: Sequence[FactRequest],
                 device: torch.device) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """"{subject} is a" per fact: (encoded, subject's last token, last token) for the KL term."""
    texts = [f"{request.subject} is a" for request in requests]
    encoded = {k: v.to(device) for k, v in tokenizer(texts, return_tensors="pt", padding=True, padding_side="right").items()}
    subject_end = torch.tensor([subject_token_span(tokenizer, t, r.subject)[1] - 1 for t, r in zip(texts, requests, strict=True)])
    return encoded, subject_end, encoded["attention_mask"].sum(-1) - 1


def run(model: PreTrainedModel, params: dict[str, Tensor], past: StackedPrefixes | None = None,
        **inputs: Tensor) -> Tensor:
    """Logits of ``model`` with ``params`` substituted (each row continued after ``past``, if given)."""
    inputs.setdefault("use_cache", False)
    if past is not None:
        inputs.update(past.continuation(model.config, inputs["attention_mask"]))
    return (functional_call(model, params, args=(), kwargs=inputs, strict=False) if params else model(**inputs)).logits


def run_until(model: PreTrainedModel, params: dict[str, Tensor], module: nn.Module, **inputs: Tensor) -> None:
    """:func:`run`, ended once ``module`` has run (:mod:`lit_edit.mechanics.hooks`): for reading early layers'
    activations, whose later blocks and output head would be most of the work."""
    with stopping_after(module):
        run(model, params, **inputs)


@torch.no_grad()
def subject_keys(model: PreTrainedModel, params: dict[str, Tensor], module: nn.Module,
                 rows: FactRows) -> tuple[Tensor, Tensor]:
    """Per fact, ``module``'s input at the subject's last token: averaged over the fact's contexts (k*, which decides
    the direction of ROME's update) and in the bare prompt alone (the key that prompt will present)."""
    with captured(module) as seen:
        run_until(model, params, module, input_ids=rows.examples.input_ids, attention_mask=rows.examples.attention_mask)
    index = torch.arange(len(rows.fact))
    keys = seen["input"][index, rows.subject_position]
    return mean_per_fact(keys, rows), keys[rows.unprefixed].float()


def mean_per_fact(values: Tensor, rows: FactRows) -> Tensor:
    """Per fact, the mean of ``values`` (one per row) over that fact's contexts."""
    values = values.float()
    facts = int(rows.fact.max()) + 1
    fact = rows.fact.to(values.device)
    sums = torch.zeros(facts, values.shape[-1], device=values.device).index_add_(0, fact, values)
    return sums / torch.bincount(fact, minlength=facts).unsqueeze(-1)


@dataclass
class CutRows:
    """Rows cut where δ is added (the subject's last token): the tokens before the cut cannot see δ (causal
    attention), so their key/value states are read once and each search step runs only the rest after them. On
    SmolLM2 and CounterFact's 11 contexts per fact the rest is about a third of the tokens."""

    examples: TokenizedExamples  # from the cut on, right-padded (uncut when ``past`` is None)
    offset: Tensor  # per row, the tokens cut off
    past: StackedPrefixes | None

    def select(self, rows: Tensor) -> tuple[TokenizedExamples, Tensor, StackedPrefixes | None]:
        """(examples, position of δ in each, states to continue after) of ``rows``."""
        position = self.offset.new_zeros(len(rows)) if self.past is not None else self.offset[rows]
        return self.examples.select(rows), position, None if self.past is None else self.past.select(rows)


def cut_rows(model: PreTrainedModel, params: dict[str, Tensor], examples: TokenizedExamples, cuts: Tensor,
             enabled: bool = True) -> CutRows:
    """``examples`` cut at ``cuts``; left whole (δ added at ``cuts``) when not ``enabled``, when nothing precedes any
    cut, or for a model that cannot continue from read states (no ``position_ids``, no per-layer keys and values)."""
    ids, mask = examples.input_ids, examples.attention_mask
    cuts = cuts.to(ids.device)
    past = read_stacked(model, [row[:cut].tolist() for row, cut in zip(ids, cuts.tolist(), strict=True)],
                        params) if enabled else None
    if past is None:
        return CutRows(examples, cuts, None)
    rest = mask.sum(1) - cuts
    steps = torch.arange(int(rest.max()), device=ids.device)
    index = (cuts[:, None] + steps).clamp_max(ids.shape[1] - 1)
    inside = steps < rest[:, None]
    kept = TokenizedExamples(ids.gather(1, index), inside.to(mask.dtype),
                             examples.labels.gather(1, index).masked_fill(~inside, IGNORE_INDEX))
    return CutRows(kept, cuts, past)


def optimise_shift(model: PreTrainedModel, params: dict[str, Tensor], kind: str, module: nn.Module, rows: FactRows,
                   essence: tuple[dict[str, Tensor], Tensor, Tensor], settings: TargetOptimisation,
                   reuse_prefix_states: bool = True) -> tuple[Tensor, Tensor]:
    """δ per fact at ``module``'s output (subject's last token) that makes every context predict the target.

    Facts are searched for together but each on its own terms: a fact whose target NLL is below
    ``settings.stop_nll`` keeps its δ and its rows leave the batch, so a batch of facts gets the δs that one
    search per fact would (as in MEMIT's per-fact search) at the cost of the facts still searching. Each step runs
    only the tokens from the subject's last token on (:class:`CutRows`; ``reuse_prefix_states=False`` runs whole
    rows, for comparison). Returns (original output v₀ at each fact's unprefixed prompt, δ). Raises
    :class:`EditFailedError` on NaN.
    """
    device = rows.examples.input_ids.device
    essence_inputs, essence_subject, essence_last = essence
    subject_position, essence_subject, essence_last = (
        t.to(device) for t in (rows.subject_position, essence_subject, essence_last))
    with torch.no_grad():
        essence_logits = run(model, params, **essence_inputs)
        unprefixed = rows.unprefixed.to(device)  # v₀ is read from each fact's own prompt: its row alone is run
        with captured(module) as seen:
            run(model, params, input_ids=rows.examples.input_ids[unprefixed],
                attention_mask=rows.examples.attention_mask[unprefixed])
        base = seen["output"][torch.arange(len(unprefixed), device=device), subject_position[unprefixed]].float()
    keep_log_probs = F.log_softmax(essence_logits[torch.arange(len(essence_last), device=device), essence_last].float(), dim=-1)
    contexts = cut_rows(model, params, rows.examples, subject_position, reuse_prefix_states)
    essence_ids = essence_inputs["input_ids"]
    essence_cut = cut_rows(model, params, TokenizedExamples(essence_ids, essence_inputs["attention_mask"],
                                                            torch.full_like(essence_ids, IGNORE_INDEX)),
                           essence_subject, reuse_prefix_states)
    essence_last = essence_last - (essence_cut.offset if essence_cut.past is not None else 0)
    shift = torch.zeros_like(base, requires_grad=True)
    optimizer = torch.optim.Adam([shift], lr=settings.lr)
    facts = shift.shape[0]
    fact = rows.fact.to(device)
    per_fact = torch.bincount(fact, minlength=facts).float()
    limit = settings.clamp_norm * base.norm(dim=-1, keepdim=True)
    searching = torch.ones(facts, dtype=torch.bool, device=device)
    for _ in range(settings.steps):
        active = searching.nonzero().squeeze(1)
        row = searching[fact].nonzero().squeeze(1)
        optimizer.zero_grad(set_to_none=True)
        examples, position, past = contexts.select(row)
        with output_shifted(module, torch.arange(len(row), device=device), position, shift[fact[row]]):
            logits, labels = aligned_logits(model, examples, kind, params, labelled_only=True, past=past)
        nll = example_nll(logits, labels)
        fact_nll = (torch.zeros(facts, device=device).index_add(0, fact[row], nll) / per_fact)[active]
        examples, position, past = essence_cut.select(active)
        with output_shifted(module, torch.arange(len(active), device=device), position, shift[active]):
            essence_now = run(model, params, past, input_ids=examples.input_ids, attention_mask=examples.attention_mask)
        kl = F.kl_div(F.log_softmax(essence_now[torch.arange(len(active), device=device), essence_last[active]].float(), -1),
                      keep_log_probs[active], log_target=True, reduction="none").sum(-1)
        decay = shift[active].pow(2).sum(-1) / base[active].pow(2).sum(-1).clamp_min(1e-12)
        loss = (fact_nll + settings.kl_weight * kl + settings.weight_decay * decay).sum()
        if not torch.isfinite(loss):
            raise EditFailedError(f"the target search diverged (loss {loss.item()}); the model was left unchanged")
        searching[active[fact_nll < settings.stop_nll]] = False
        if not searching.any():
            break
        loss.backward()
        kept = shift.detach().clone()
        optimizer.step()
        with torch.no_grad():  # keep each δ within clamp_norm · ‖v₀‖; a finished fact's δ stays as it is
            norm = shift.norm(dim=-1, keepdim=True)
            shift.mul_(torch.where(norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm)))
            shift[~searching] = kept[~searching]
    if not torch.isfinite(shift).all():
        raise EditFailedError("the target search produced non-finite values; the model was left unchanged")
    return base, shift.detach()


@torch.no_grad()
def context_prefixes(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, count: int, tokens: int,
                     seed: int = 0) -> list[str]:
    """Short texts the model samples itself, put before a prompt so its key does not depend on the exact wording."""
    if count == 0:
        return []
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompt = torch.full((count, 1), start, dtype=torch.long, device=model.device)
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=5,
                             max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=start)
    texts = [text.replace("{", "").replace("}", "").strip() for text in
             tokenizer.batch_decode(ids[:, 1:], skip_special_tokens=True)]
    return [text if text.endswith((".", "!", "?")) else text + "." for text in texts]


def current_values(weight: Tensor, bias: Tensor | None, keys: Tensor) -> Tensor:
    """What the projection now outputs for each key: ``W k + b`` (W as (out, in))."""
    values = keys.to(weight.dtype) @ weight.T
    return values + bias if bias is not None else values


def rank_one_update(key: Tensor, residual: Tensor, inverse_moment_key: Tensor) -> Tensor:
    """ROME's ΔW = r uᵀ / (uᵀk) with u = C⁻¹k*: afterwards (W + ΔW) k = W k + r, and keys orthogonal to u
    (orthogonal to k* in C's metric) are untouched."""
    u = inverse_moment_key.double()
    return (torch.outer(residual.double(), u) / (u @ key.double())).float()


def least_squares_update(keys: Tensor, residuals: Tensor, regulariser: Tensor) -> Tensor:
    """MEMIT's ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ for keys K (n, in) and residuals R (n, out): writes all n facts at once
    while keeping W's answers on the keys summarised by C (``regulariser`` = λC)."""
    keys, residuals = keys.double(), residuals.double()
    system = regulariser.double() + keys.T @ keys
    return (residuals.T @ torch.linalg.solve(system, keys.T).T).float()
