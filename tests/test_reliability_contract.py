"""The contract every editor keeps (issue 21): an edit it cannot make is refused with the base model left bit-identical
and recorded as a failed edit (the evaluation goes on); an edit whose model outputs non-finite logits is refused too;
a setting out of its range is refused when the editor is built, naming the class and the setting.

Each editor is built once for the module on the tiny GPT-2, in a configuration that makes its edits diverge where its
settings can (a huge but finite learning rate or scale: the weights stay finite, the outputs do not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
import torch
from conftest import synthetic_records
from test_memory_editors import tiny_encoder

import lit_edit.editors.base as editor_base
import lit_edit.editors.cache.cache as cache_module
import lit_edit.editors.memit.memit as memit_module
import lit_edit.editors.rome.rome as rome_module
from lit_edit.data.batch import EditBatch
from lit_edit.data.records import EditRecord
from lit_edit.editors import (
    ENN,
    KE,
    MEMIT,
    MEND,
    ROME,
    SERAC,
    EditCache,
    EditFailedError,
    Editor,
    EditScores,
    FineTune,
    KnowledgeNeurons,
    NoEdit,
)
from lit_edit.editors.key_value import TargetOptimisation
from lit_edit.editors.memory import EditDescriptor
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.errors import ConfigurationError
from lit_edit.key_statistics import KeyStatisticsSpec
from lit_edit.suite import EditorSuite

STATISTICS = KeyStatisticsSpec(samples=16, tokens=8, batch_size=16)
LOCATING = dict(statistics=STATISTICS, prefixes=ContextPrefixes(lengths=[3], per_length=1),
                target=TargetOptimisation(steps=2))
RECORD = synthetic_records()[3]
NOT_FINITE = "the edited model's logits on the edit prompt are not finite"


@pytest.fixture(scope="module", autouse=True)
def checkpoints_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ROME and MEMIT cache their key statistics under $LIT_EDIT_CHECKPOINTS: a directory of this module's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path_factory.mktemp("contract_checkpoints")))
        yield


@dataclass
class Case:
    """How to build one editor, and how to make its edits go wrong."""

    build: Callable[[dict, str], Editor]
    refused: Callable[[pytest.MonkeyPatch, Editor], EditRecord] | None = None
    """Set up a refusal (the editor's own, or a forced divergence); returns the record to edit."""
    non_finite: Callable[[pytest.MonkeyPatch, Editor], None] | None = None
    """Set up an edit whose weights stay finite but whose outputs do not (None: the built editor already makes one)."""
    reason: str = "EditFailedError"


def bad_subject(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, subject="s39")  # not in "the home of s3 is"


def no_subject(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, subject=None)


def same_first_token(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return replace(RECORD, target_new=f"{RECORD.target_true} h5")  # KN cannot tell the answers apart


def diverging(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
    return RECORD  # the editor was built to diverge


def huge_update(module: object, function: str) -> Callable[[pytest.MonkeyPatch, Editor], None]:
    def setup(patch: pytest.MonkeyPatch, editor: Editor) -> None:
        original = getattr(module, function)
        patch.setattr(module, function, lambda *args: torch.full_like(original(*args), 1.0e30))
    return setup


def nan_counterfactual(patch: pytest.MonkeyPatch, editor: Editor) -> None:
    patch.setattr(editor.counterfactual, "forward", lambda examples, descriptors: torch.full(
        (len(examples), examples.input_ids.shape[1] - 1, editor.model.config.vocab_size), float("nan")))


def nan_cached_answer(patch: pytest.MonkeyPatch, editor: Editor) -> None:
    patch.setattr(cache_module, "CACHED_MARGIN", float("nan"))


def forced(setup: Callable[[pytest.MonkeyPatch, Editor], None]) -> Callable[[pytest.MonkeyPatch, Editor], EditRecord]:
    def refused(patch: pytest.MonkeyPatch, editor: Editor) -> EditRecord:
        setup(patch, editor)
        return RECORD
    return refused


CASES = {
    "FineTune": Case(lambda models, encoder: FineTune(models["gpt2"], steps=1, lr=1.0e30), diverging),
    "MEND": Case(lambda models, encoder: MEND(models["gpt2"], rank=4, edit_lr=1.0e38).eval(), diverging),
    "ENN": Case(lambda models, encoder: ENN(models["gpt2"], inner_lr=1.0e30, first_order=True).eval(), diverging),
    "KE": Case(lambda models, encoder: KE(models["gpt2"], max_scale=1.0e30, lstm_dim=4, condition_dim=8,
                                          hidden_dim=4).eval(), diverging),
    "ROME": Case(lambda models, encoder: ROME(models["gpt2"], layer=0, **LOCATING), bad_subject,
                 huge_update(rome_module, "rank_one_update"), "SubjectNotFoundError"),
    "MEMIT": Case(lambda models, encoder: MEMIT(models["gpt2"], layers=[0], **LOCATING), no_subject,
                  huge_update(memit_module, "least_squares_update"), "EditRefusedError"),
    "KnowledgeNeurons": Case(lambda models, encoder: KnowledgeNeurons(models["gpt2"], steps=2, batch_size=2,
                                                                      threshold=0.1, edit_scale=1.0e30),
                             same_first_token, None),
    "SERAC": Case(lambda models, encoder: SERAC(models["gpt2"], encoder=encoder), forced(nan_counterfactual),
                  nan_counterfactual),
    "EditCache": Case(lambda models, encoder: EditCache(models["gpt2"]), forced(nan_cached_answer), nan_cached_answer),
}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("contract_encoder"))


@pytest.fixture(scope="module")
def built(tiny_models: dict, encoder_dir: str) -> Callable[[str], Editor]:
    """Each editor of :data:`CASES`, built the first time a test asks for it."""
    editors: dict[str, Editor] = {}

    def get(name: str) -> Editor:
        if name not in editors:
            editors[name] = CASES[name].build(tiny_models, encoder_dir)
        return editors[name]
    return get


def snapshot(editor: Editor) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in editor.model.state_dict().items()}


def assert_bit_identical(editor: Editor, before: dict[str, torch.Tensor]) -> None:
    after = editor.model.state_dict()
    assert sorted(after) == sorted(before)
    changed = [name for name, value in before.items() if not torch.equal(value, after[name])]
    assert not changed, changed


def batch_of(editor: Editor, record: EditRecord) -> EditBatch:
    return editor.prompts.batch([record])


@pytest.mark.parametrize("name", list(CASES))
def test_a_refused_edit_leaves_the_model_bit_identical_and_is_recorded_as_failed(name, built, tmp_path, monkeypatch):
    editor = built(name)
    record = CASES[name].refused(monkeypatch, editor)
    batch = batch_of(editor, record)
    before = snapshot(editor)
    with pytest.raises(EditFailedError):
        editor.score(batch, EditScores(compare_targets=True))
    assert_bit_identical(editor, before)
    suite = EditorSuite({"editor": editor}, output=str(tmp_path / "r.json"))
    entry = suite.edit("editor", editor, batch, None, last=True)
    assert entry.status == "failed" and entry.reason.startswith(CASES[name].reason + ": "), entry
    assert_bit_identical(editor, before)


@pytest.mark.parametrize("name", list(CASES))
def test_an_edit_with_non_finite_outputs_is_refused_by_checked_edit(name, built, monkeypatch):
    editor = built(name)
    if CASES[name].non_finite is not None:
        CASES[name].non_finite(monkeypatch, editor)
    batch = batch_of(editor, RECORD)
    before = snapshot(editor)
    edited = editor.edit(batch)  # the edit itself goes through: its weights (or its memory) are finite
    assert all(torch.isfinite(value).all() for value in edited.params.values())
    with pytest.raises(EditFailedError, match=NOT_FINITE):
        editor.checked_edit(batch)
    assert_bit_identical(editor, before)


def test_an_edit_that_changes_nothing_passes_checked_edit(tiny_models):
    editor = NoEdit(tiny_models["gpt2"])
    edited = editor.checked_edit(batch_of(editor, RECORD))
    assert not edited.changes_outputs


def test_a_sound_edit_passes_checked_edit(tiny_models):
    editor = FineTune(tiny_models["gpt2"], steps=1, lr=1.0e-3)
    batch = batch_of(editor, RECORD)
    logits, _ = editor.logits(batch.edit, editor.checked_edit(batch))
    assert torch.isfinite(logits).all()


def test_a_query_that_leaves_serac_no_room_for_its_edit_is_a_refused_edit(built):
    counterfactual = built("SERAC").counterfactual
    descriptor = EditDescriptor("0", RECORD.prompt, RECORD.target_new)
    with pytest.raises(EditFailedError, match="leaves no room for its edit"):
        counterfactual._prefix_ids(descriptor, counterfactual.max_positions)


nan, inf = float("nan"), float("inf")
#: (editor class, settings, the message, whether the refusal comes before the model is loaded).
BAD_SETTINGS = [
    (NoEdit, dict(max_length=1), r"NoEdit\.max_length must be >= 2, got 1", True),
    (FineTune, dict(steps=0), r"FineTune\.steps must be >= 1, got 0", True),
    (FineTune, dict(steps=-2), r"FineTune\.steps must be >= 1, got -2", True),
    (FineTune, dict(lr=-1.0), r"FineTune\.lr must be a finite number > 0, got -1\.0", True),
    (FineTune, dict(lr=nan), r"FineTune\.lr must be a finite number > 0, got nan", True),
    (FineTune, dict(lr=inf), r"FineTune\.lr must be a finite number > 0, got inf", True),
    (FineTune, dict(kl_weight=-0.5), r"FineTune\.kl_weight must be a finite number >= 0", True),
    (MEND, dict(lr=-1.0e-3), r"MEND\.lr must be a finite number > 0, got -0\.001 \(init_args\.lr", True),
    (MEND, dict(rank=0), r"MEND\.rank must be >= 1, got 0", True),
    (MEND, dict(rank=-3), r"MEND\.rank must be >= 1, got -3", True),
    (MEND, dict(n_blocks=0), r"MEND\.n_blocks must be >= 1", True),
    (MEND, dict(edit_lr=0.0), r"MEND\.edit_lr must be a finite number > 0", True),
    (MEND, dict(lr_lr=-1.0), r"MEND\.lr_lr must be a finite number >= 0", True),
    (MEND, dict(c_edit=0.0), r"MEND\.c_edit must be a finite number > 0", True),
    (MEND, dict(c_loc=-1.0), r"MEND\.c_loc must be a finite number >= 0", True),
    (ENN, dict(inner_steps=0), r"ENN\.inner_steps must be >= 1, got 0", True),
    (ENN, dict(inner_lr=-1.0), r"ENN\.inner_lr must be a finite number > 0", True),
    (ENN, dict(lr=0.0), r"ENN\.lr must be a finite number > 0", True),
    (ENN, dict(c_base=-1.0), r"ENN\.c_base must be a finite number >= 0", True),
    (KE, dict(max_scale=0.0), r"KE\.max_scale must be a finite number > 0, got 0\.0", True),
    (KE, dict(lstm_dim=0), r"KE\.lstm_dim must be >= 1", True),
    (KE, dict(condition_dim=-1), r"KE\.condition_dim must be >= 1", True),
    (KE, dict(hidden_dim=0), r"KE\.hidden_dim must be >= 1", True),
    (KE, dict(lr=-1.0), r"KE\.lr must be a finite number > 0", True),
    (KE, dict(c_loc=-1.0), r"KE\.c_loc must be a finite number >= 0", True),
    (ROME, dict(layer=-1), r"ROME\.layer names layer -1, but a layer index must be an integer >= 0", True),
    (ROME, dict(layer=2), r"ROME\.layer names layer 2, but a layer index must be in \[0, 2\): the model has 2 blocks", False),
    (ROME, dict(target=TargetOptimisation(steps=-1)), r"ROME\.target\.steps must be >= 1, got -1", True),
    (ROME, dict(target=TargetOptimisation(lr=0.0)), r"ROME\.target\.lr must be a finite number > 0", True),
    (ROME, dict(target=TargetOptimisation(clamp_norm=-1.0)), r"ROME\.target\.clamp_norm must be", True),
    (ROME, dict(target=TargetOptimisation(kl_weight=nan)), r"ROME\.target\.kl_weight must be", True),
    (ROME, dict(statistics=KeyStatisticsSpec(samples=0)), r"ROME\.statistics\.samples must be >= 1", True),
    (ROME, dict(statistics=KeyStatisticsSpec(tokens=1)), r"ROME\.statistics\.tokens must be >= 2", True),
    (ROME, dict(statistics=KeyStatisticsSpec(corpus="no/such/corpus.txt")), r"ROME\.statistics\.corpus: no file",
     True),
    (ROME, dict(prefixes=ContextPrefixes(per_length=-1)), r"ROME\.prefixes\.per_length must be >= 0", True),
    (ROME, dict(prefixes=ContextPrefixes(lengths=[5, 0])), r"ROME\.prefixes\.lengths\[\] must be >= 1", True),
    (ROME, dict(max_condition=0.5), r"ROME\.max_condition must be >= 1", True),
    (MEMIT, dict(layers=[]), r"MEMIT\.layers must be a non-empty list of layer indices, got \[\]", True),
    (MEMIT, dict(layers=[1, 1]), r"MEMIT\.layers must be a list of distinct layer indices", True),
    (MEMIT, dict(layers=[0, 5]), r"MEMIT\.layers names layer 5, but a layer index must be in \[0, 2\)", False),
    (MEMIT, dict(layers=[0, 1]), r"MEMIT\.layers names layer 1, the model's last block: an edit there changes", False),
    (ROME, dict(layer=1), r"ROME\.layer names layer 1, the model's last block", False),
    (MEMIT, dict(layers=[0], moment_weight=-1.0), r"MEMIT\.moment_weight must be a finite number > 0", True),
    (MEMIT, dict(layers=[0], facts_per_chunk=0), r"MEMIT\.facts_per_chunk must be >= 1", True),
    (KnowledgeNeurons, dict(steps=0), r"KnowledgeNeurons\.steps must be >= 1", True),
    (KnowledgeNeurons, dict(batch_size=0), r"KnowledgeNeurons\.batch_size must be >= 1", True),
    (KnowledgeNeurons, dict(threshold=0.0), r"KnowledgeNeurons\.threshold must be in \(0, 1\), got 0\.0", True),
    (KnowledgeNeurons, dict(threshold=1.5), r"KnowledgeNeurons\.threshold must be in \(0, 1\)", True),
    (KnowledgeNeurons, dict(shared_fraction=1.0), r"KnowledgeNeurons\.shared_fraction must be in \[0, 1\)", True),
    (KnowledgeNeurons, dict(max_neurons=0), r"KnowledgeNeurons\.max_neurons must be >= 1", True),
    (KnowledgeNeurons, dict(edit_scale=-1.0), r"KnowledgeNeurons\.edit_scale must be a finite number > 0", True),
    (KnowledgeNeurons, dict(exclusion_prompts=-1), r"KnowledgeNeurons\.exclusion_prompts must be >= 0", True),
    (KnowledgeNeurons, dict(layers=[]), r"KnowledgeNeurons\.layers must be a non-empty list", True),
    (KnowledgeNeurons, dict(layers=[7]), r"KnowledgeNeurons\.layers names layer 7, but a layer index must be in \[0, 2\)",
     False),
    (SERAC, dict(threshold=1.0), r"SERAC\.threshold must be in \(0, 1\), got 1\.0", True),
    (SERAC, dict(threshold=0.0), r"SERAC\.threshold must be in \(0, 1\)", True),
    (SERAC, dict(lr=-1.0), r"SERAC\.lr must be a finite number > 0", True),
    (SERAC, dict(classifier_lr=-1.0), r"SERAC\.classifier_lr must be a finite number >= 0", True),
    (SERAC, dict(c_loc=-1.0), r"SERAC\.c_loc must be a finite number >= 0", True),
    (SERAC, dict(prefix_cache_mb=-1.0), r"SERAC\.prefix_cache_mb must be a finite number >= 0", True),
    (SERAC, dict(template="{query} {target}"), r"SERAC\.template '\{query\} \{target\}' is not a format string", True),
    (EditCache, dict(epsilon=-1.0), r"EditCache\.epsilon must be a finite number >= 0, got -1\.0", True),
    (EditCache, dict(epsilon=nan), r"EditCache\.epsilon must be a finite number >= 0, got nan", True),
]


@pytest.mark.parametrize(("editor_class", "settings", "message", "before_loading"), BAD_SETTINGS,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in s.items())}"[:60]
                              for c, s, _, _ in BAD_SETTINGS])
def test_a_setting_out_of_range_is_refused_when_the_editor_is_built(editor_class, settings, message, before_loading,
                                                                    tiny_models, monkeypatch):
    if before_loading:  # refused cheaply: the model is never loaded
        monkeypatch.setattr(editor_base, "load_model", lambda spec: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigurationError, match=message):
        editor_class(tiny_models["gpt2"], **settings)


@pytest.mark.parametrize("editor_class", [ROME, SERAC, EditCache])
def test_a_causal_only_editor_refuses_a_seq2seq_model_naming_the_setting(editor_class, tiny_models, tmp_path):
    settings = {"encoder": str(tmp_path)} if editor_class is SERAC else {}
    with pytest.raises(ConfigurationError, match=r"model\.kind 'seq2seq'"):
        editor_class(tiny_models["t5"], **settings)


def test_every_editor_class_is_covered():
    """A new editor joins the contract: every class exported by lit_edit.editors has a case above."""
    import lit_edit.editors as editors

    classes = {getattr(editors, name) for name in editors.__all__}
    editor_classes = {c.__name__ for c in classes if isinstance(c, type) and issubclass(c, Editor) and c is not Editor}
    assert editor_classes == set(CASES) | {"NoEdit"}
    assert editor_classes <= {c.__name__ for c, _, _, _ in BAD_SETTINGS}
