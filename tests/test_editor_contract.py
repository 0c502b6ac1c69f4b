"""The contract every registered editor keeps, on every tiny architecture it supports (issue 23): the base model stays
bit-identical, a refused edit raises EditFailedError and is recorded as failed, an edit moves the taught fact it is
about and not an unrelated one, bad settings are refused at construction, and the editor's state and its edits
round-trip through files.

:data:`CONTRACTS` says how to build each name of :mod:`lit_edit.editors.registry` on a tiny model; a registered editor
without an entry fails :func:`test_every_registered_editor_has_a_contract`, so a new editor cannot skip the suite.
An architecture an editor does not support is not skipped: it must be refused with ConfigurationError when built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_CONFIGS, synthetic_records
from test_memory_editors import tiny_encoder
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import lit_edit.editors.cache.cache as cache_module
from lit_edit.data.batch import IGNORE_INDEX
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import EditFailedError, Editor
from lit_edit.editors.key_value import TargetOptimisation
from lit_edit.editors.memory import EditMemory
from lit_edit.editors.registry import editor_class, editor_names, registered
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.errors import ConfigurationError
from lit_edit.key_statistics import KeyStatisticsSpec
from lit_edit.models import ModelSpec, load_model
from lit_edit.suite import EditorSuite

ARCHITECTURES = list(TINY_CONFIGS)
CAUSAL = [arch for arch, (_, _, kind, _) in TINY_CONFIGS.items() if kind == "causal"]
#: The edit every test makes; on the knowing GPT-2 the edit prompt's answer is its true object, and the far
#: out-of-scope prompt (another subject, the other relation) is a taught fact answered correctly.
RECORD = synthetic_records()[1]
#: Small enough to take a fraction of a second per edit; ROME's and MEMIT's statistics are cached per model.
LOCATING = dict(statistics=KeyStatisticsSpec(samples=16, tokens=8, batch_size=16),
                prefixes=ContextPrefixes(lengths=[3], per_length=1), target=TargetOptimisation(steps=2))


def subject_not_in_prompt(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, subject="s39")


def no_subject(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, subject=None)


def same_first_token(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, target_new=f"{RECORD.target_true} h5")  # KN cannot tell the new answer from the old


def infinite(setting: str) -> Callable[[pytest.MonkeyPatch, Editor], EditRecord]:
    """A step size set to infinity after construction (which refuses it): every edit's update is non-finite. A huge
    finite one is not enough: normalised architectures (Llama's and T5's RMS norms) keep the outputs finite."""
    def refusal(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
        value = getattr(editor, setting)
        if isinstance(value, torch.nn.Module):  # learned rates (MEND's, ENN's): this instance is the test's own
            with torch.no_grad():
                for rate in value.parameters():
                    rate.fill_(float("inf"))
        else:
            patch.setattr(editor, setting, float("inf"))
        return RECORD
    return refusal


def nan_cached_answer(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    patch.setattr(cache_module, "CACHED_MARGIN", float("nan"))
    return RECORD


def nan_counterfactual(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    vocab = editor.model.config.vocab_size
    patch.setattr(editor.counterfactual, "forward", lambda examples, descriptors: torch.full(
        (len(examples), examples.input_ids.shape[1] - 1, vocab), float("nan")))
    return RECORD


@dataclass(frozen=True)
class Contract:
    """How one registered editor is built on a tiny model, and how each clause of the contract is put to it."""

    settings: dict[str, Any]
    """Over the registry's defaults, on every tiny model: small networks, few steps, layers a 2-layer model has."""
    bad_settings: tuple[tuple[dict[str, Any], str], ...]
    """Settings refused at construction, each with the setting its ConfigurationError names."""
    refusal: Callable[[pytest.MonkeyPatch, Editor], EditRecord] | None
    """Sets up an edit that an instance of the test's own must refuse and returns its record (None for
    ``identity``)."""
    identity: bool = False
    """The editor changes nothing (NoEdit): every output stays as it was, and there is nothing to refuse."""
    knowing: dict[str, Any] = field(default_factory=dict)
    """Settings (over ``settings``) on the knowing GPT-2 that make an untrained editor edit."""
    cannot_edit_tiny: str | None = None
    """Why the editor cannot be made to move a taught fact on a tiny model (that case is a strict xfail)."""
    causal_only: bool = False
    memory: bool = False
    """Edits live in an edit memory, not in weights (SERAC, the cache)."""
    encoder: bool = False
    """Takes SERAC's scope-classifier encoder (a tiny BERT here)."""


CONTRACTS: dict[str, Contract] = {
    "noedit": Contract({}, (({"max_length": 1}, "max_length"),), None, identity=True),
    "ft": Contract(dict(steps=2, lr=1.0e-2), (({"lr": -1.0}, "lr"), ({"steps": 0}, "steps")), infinite("lr"),
                   knowing=dict(steps=10)),
    "ft_kl": Contract(dict(steps=2, lr=1.0e-2, locality_prompts=["alpha beta gamma"]),
                      (({"kl_weight": -1.0}, "kl_weight"), ({"steps": 0}, "steps")), infinite("lr"),
                      knowing=dict(steps=10)),
    "cache": Contract({}, (({"epsilon": -1.0}, "epsilon"), ({"max_length": 1}, "max_length")), nan_cached_answer,
                      causal_only=True, memory=True),
    "mend": Contract(dict(rank=4, n_blocks=1), (({"lr": -1.0e-3}, "lr"), ({"rank": 0}, "rank"),
                                                ({"edit_lr": 0.0}, "edit_lr")), infinite("edit_lrs"),
                     knowing=dict(edit_lr=1.0)),
    "enn": Contract(dict(inner_lr=1.0e-2, first_order=True), (({"inner_steps": 0}, "inner_steps"),
                                                              ({"inner_lr": -1.0}, "inner_lr")), infinite("inner_lrs"),
                    knowing=dict(inner_lr=1.0)),
    "ke": Contract(dict(lstm_dim=4, condition_dim=8, hidden_dim=4), (({"max_scale": 0.0}, "max_scale"),
                                                                     ({"lr": -1.0}, "lr")), infinite("max_scale"),
                   knowing=dict(max_scale=2.0)),
    "serac": Contract({}, (({"threshold": 1.0}, "threshold"), ({"lr": -1.0}, "lr")), nan_counterfactual,
                      cannot_edit_tiny="untrained, SERAC's counterfactual model ignores the edit it is shown and its "
                                       "scope classifier routes unrelated prompts to it: it edits only once trained",
                      causal_only=True, memory=True, encoder=True),
    "kn": Contract(dict(steps=2, batch_size=2), (({"threshold": 1.5}, "threshold"), ({"steps": 0}, "steps"),
                                                 ({"layers": [7]}, "layers")), same_first_token,
                   knowing=dict(steps=4, batch_size=4), causal_only=True),
    "rome": Contract(dict(layer=0, **LOCATING), (({"layer": 2}, "layer"),
                                                 ({"target": TargetOptimisation(steps=-1)}, "target.steps")),
                     subject_not_in_prompt, knowing=dict(target=TargetOptimisation(steps=20)), causal_only=True),
    # z* is searched for at the last edited block's output at the subject, which a 2-layer model's last block passes
    # to no later one (its shift would be 0): MEMIT writes block 0 only, with a weak C prior, as ROME does.
    "memit": Contract(dict(layers=[0], moment_weight=1.0, **LOCATING),
                      (({"layers": [0, 5]}, "layers"), ({"layers": []}, "layers")), no_subject,
                      knowing=dict(target=TargetOptimisation(steps=20)), causal_only=True),
}


def supports(name: str, arch: str) -> bool:
    return not CONTRACTS[name].causal_only or arch in CAUSAL


SUPPORTED = [(name, arch) for name in CONTRACTS for arch in ARCHITECTURES if supports(name, arch)]
UNSUPPORTED = [(name, arch) for name in CONTRACTS for arch in ARCHITECTURES if not supports(name, arch)]
BAD = [(name, arch, settings, setting) for name, arch in SUPPORTED for settings, setting in CONTRACTS[name].bad_settings]


def test_every_registered_editor_has_a_contract():
    """A new editor joins the suite: every registered name has an entry, and no entry outlives its editor."""
    assert sorted(editor_names()) == sorted(CONTRACTS)


@pytest.fixture(scope="module", autouse=True)
def checkpoints_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ROME and MEMIT cache their key statistics under $LIT_EDIT_CHECKPOINTS: a directory of this module's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path_factory.mktemp("contract_checkpoints")))
        yield


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("contract_encoder"))


@pytest.fixture(scope="module")
def build(encoder_dir: str) -> Callable[..., Editor]:
    """``build(name, spec, **overrides)``: the registered editor in eval mode, with its contract's settings."""
    def make(name: str, spec: ModelSpec, **overrides: Any) -> Editor:
        contract = CONTRACTS[name]
        settings = {**registered(name).defaults, **contract.settings, **overrides}
        if contract.encoder:
            settings["encoder"] = encoder_dir
        return editor_class(name)(spec, **settings).eval()
    return make


@pytest.fixture(scope="module")
def built(tiny_models: dict[str, ModelSpec], build: Callable[..., Editor]) -> Callable[[str, str], Editor]:
    """Each (name, architecture)'s editor, built once for the module."""
    editors: dict[tuple[str, str], Editor] = {}

    def get(name: str, arch: str) -> Editor:
        if (name, arch) not in editors:
            editors[name, arch] = build(name, tiny_models[arch])
        return editors[name, arch]
    return get


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    after = module.state_dict()
    assert sorted(after) == sorted(before)
    return [name for name, value in before.items() if not torch.equal(value, after[name])]


def edit(editor: Editor, record: EditRecord = RECORD):
    with torch.enable_grad():
        return editor.checked_edit(editor.prompts.batch([record]))


def answers(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's argmax at its first labelled position: the first token of its answer."""
    return logits[torch.arange(len(labels)), first_labelled(labels)].argmax(-1)


def first_labelled(labels: torch.Tensor) -> torch.Tensor:
    return (labels != IGNORE_INDEX).int().argmax(1)


SUPPORTED_IDS = [f"{name}-{arch}" for name, arch in SUPPORTED]


@pytest.mark.parametrize(("name", "arch"), UNSUPPORTED, ids=[f"{name}-{arch}" for name, arch in UNSUPPORTED])
def test_an_unsupported_architecture_is_refused_when_the_editor_is_built(name, arch, tiny_models, build):
    with pytest.raises(ConfigurationError, match=r"model\.kind 'seq2seq'"):
        build(name, tiny_models[arch])


@pytest.mark.parametrize(("name", "arch"), SUPPORTED, ids=SUPPORTED_IDS)
def test_an_edit_leaves_the_base_model_and_the_editor_bit_identical(name, arch, built):
    editor = built(name, arch)
    base, own = snapshot(editor.model), snapshot(editor)
    edited = edit(editor)
    assert edited.changes_outputs != CONTRACTS[name].identity
    assert not changed(editor.model, base) and not changed(editor, own)
    with edited.applied():
        written = changed(editor.model, base)
        if CONTRACTS[name].memory:  # a memory edit has no weights to write: generation reads the memory
            assert not written
        else:
            assert sorted(written) == sorted(n for n, v in edited.params.items() if not torch.equal(v, base[n]))
            assert written or CONTRACTS[name].identity
    assert not changed(editor.model, base)


@pytest.mark.parametrize(("name", "arch"), SUPPORTED, ids=SUPPORTED_IDS)
def test_a_refused_edit_raises_leaves_the_model_unchanged_and_is_recorded_as_failed(name, arch, build, tiny_models,
                                                                                   monkeypatch, tmp_path):
    contract = CONTRACTS[name]
    editor = build(name, tiny_models[arch])  # its own: a refusal may change its settings
    record = RECORD if contract.identity else contract.refusal(monkeypatch, editor)
    batch = editor.prompts.batch([record])
    before = snapshot(editor.model)
    suite = EditorSuite({"editor": editor}, output=str(tmp_path / "results.json"))
    if contract.identity:  # nothing to refuse, and nothing is
        assert not edit(editor, record).changes_outputs
        assert suite.edit("editor", editor, batch, None, last=True).status == "done"
    else:
        with pytest.raises(EditFailedError):
            edit(editor, record)
        assert not changed(editor.model, before)
        entry = suite.edit("editor", editor, batch, None, last=True)
        assert entry.status == "failed" and entry.reason, entry
    assert not changed(editor.model, before)


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_an_edit_moves_the_taught_fact_and_keeps_an_unrelated_one(name, knowing_gpt2, build, request):
    contract = CONTRACTS[name]
    if contract.cannot_edit_tiny:
        request.applymarker(pytest.mark.xfail(reason=contract.cannot_edit_tiny, raises=AssertionError, strict=True))
    editor = build(name, knowing_gpt2, **contract.knowing)
    unrelated = RECORD.out_of_scope[0]
    examples = editor.prompts([LabeledPrompt(RECORD.prompt, RECORD.target_true), unrelated])
    pre_logits, labels = editor.logits(examples)
    pre = answers(pre_logits, labels)
    assert torch.equal(pre, labels.gather(1, first_labelled(labels)[:, None]).squeeze(1))  # it knows both facts
    post_logits, _ = editor.logits(examples, edit(editor))
    post = answers(post_logits, labels)
    if contract.identity:
        assert torch.equal(post_logits, pre_logits)
        return
    new = editor.prompts.target_ids(RECORD.target_new)[0]
    assert int(post[0]) == new, editor.tokenizer.decode([int(post[0])])
    assert int(post[1]) == int(pre[1]), f"{unrelated.prompt!r} now answers {editor.tokenizer.decode([int(post[1])])!r}"


@pytest.mark.parametrize(("name", "arch", "settings", "setting"), BAD,
                         ids=[f"{n}-{a}-{s}" for n, a, _, s in BAD])
def test_a_bad_setting_is_refused_when_the_editor_is_built(name, arch, settings, setting, tiny_models, build):
    class_name = editor_class(name).__name__
    with pytest.raises(ConfigurationError, match=rf"{class_name}\.{setting}\b"):
        build(name, tiny_models[arch], **settings)


def perturbed(editor: Editor) -> Editor:
    """The editor's own weights moved off their initial values, as training would, so that loading them shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in editor.parameters():
            if parameter.is_floating_point():
                parameter.add_(1.0e-3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return editor


def reloaded_model(directory: Path, kind: str) -> torch.nn.Module:
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    return auto.from_pretrained(directory)


@pytest.mark.parametrize(("name", "arch"), SUPPORTED, ids=SUPPORTED_IDS)
def test_the_editor_and_its_edit_round_trip_through_files(name, arch, tiny_models, build, tmp_path):
    spec, contract = tiny_models[arch], CONTRACTS[name]
    base = snapshot(load_model(spec))  # the base model every editor of ``spec`` shares
    torch.manual_seed(1)
    editor = perturbed(build(name, spec))
    checkpoint = {"state_dict": editor.state_dict()}
    editor.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "editor.ckpt")
    torch.manual_seed(2)  # another initialisation, replaced by the saved weights
    if registered(name).trained:
        fresh = build(name, spec, checkpoint=str(tmp_path / "editor.ckpt"))
    else:
        fresh = build(name, spec)
        fresh.load_state_dict(torch.load(tmp_path / "editor.ckpt", weights_only=True)["state_dict"])
    assert not changed(fresh, snapshot(editor))
    edited = edit(editor)
    if contract.memory:
        memory = EditMemory.load(edited.router.memory.save(tmp_path / "memory.pt"))
        again = fresh.routed(memory)
        queries = fresh.prompts([*RECORD.in_scope, *RECORD.out_of_scope, *RECORD.hard_out_of_scope])
        assert torch.equal(again.router.route(queries).edits, edited.router.route(queries).edits)
        assert torch.equal(again.logits(queries)[0], edited.logits(queries)[0])
        with pytest.raises(EditFailedError, match="memory"):
            edited.materialize()
    else:
        again = edit(fresh)
        assert sorted(again.params) == sorted(edited.params)
        assert all(torch.equal(again.params[n], edited.params[n]) for n in edited.params)
        edited.materialize().save_pretrained(tmp_path / "edited")
        model = reloaded_model(tmp_path / "edited", spec.kind)
        state = model.state_dict()
        for key, value in edited.materialize().state_dict().items():
            assert torch.equal(state[key], value), key
        named = dict(model.named_parameters())
        assert all(torch.equal(named[n], v) for n, v in edited.params.items())
    assert not changed(editor.model, base)

