"""One edit interface for weight and memory editors (issue 23): ``edit(batch, on=previous)`` makes edits on top of
earlier ones, and the result is composed, applied, saved and loaded the same way whichever kind made it."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_records

from lit_edit.data.batch import IGNORE_INDEX
from lit_edit.editors import ENN, ROME, EditCache, EditFailedError, FineTune, NoEdit
from lit_edit.editors.edit_result import EditResult
from lit_edit.editors.edited_model import EditedModel, EditFileError
from lit_edit.editors.memory import MemoryFileError
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.editors.routed import RoutedModel
from lit_edit.key_statistics import KeyStatisticsSpec
from lit_edit.metrics import edit_success
from lit_edit.protocol import SequentialEditing

FIRST, SECOND = synthetic_records()[0], synthetic_records()[3]


def snapshot(editor) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in editor.model.state_dict().items()}


def unchanged(editor, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(value, before[name]) for name, value in editor.model.state_dict().items())


@pytest.fixture(scope="module")
def ft(knowing_gpt2) -> FineTune:
    return FineTune(knowing_gpt2, steps=25, lr=1.0e-2)


@pytest.fixture(scope="module")
def cache(knowing_gpt2) -> EditCache:
    return EditCache(knowing_gpt2, epsilon=1.0)


def success(editor, record, edited: EditResult | None) -> float:
    batch = editor.prompts.batch([record])
    return float(edit_success(*editor.logits(batch.edit, edited)))


def test_neither_kind_of_editor_carries_a_side_channel_for_sequential_editing(ft, cache):
    for editor in (ft, cache):
        assert not hasattr(editor, "memory_based") and not hasattr(editor, "carried_memory")


def test_a_weight_edit_on_a_previous_one_holds_both_and_leaves_the_base_model_alone(ft):
    before = snapshot(ft)
    first = ft.edit(ft.prompts.batch([FIRST]))
    both = ft.edit(ft.prompts.batch([SECOND]), on=first)
    assert unchanged(ft, before)
    assert isinstance(both, EditedModel) and set(first.params) <= set(both.params)
    assert success(ft, FIRST, both) == 1.0 and success(ft, SECOND, both) == 1.0
    assert success(ft, FIRST, first) == 1.0 and success(ft, SECOND, first) == 0.0  # ``on`` itself is unchanged
    # The same as writing the first edit in and editing the model so found, then composing: what ``on`` means.
    with first.applied():
        second = ft.edit(ft.prompts.batch([SECOND]))
    composed = first.then(second)
    assert all(torch.equal(composed.params[n], both.params[n]) for n in both.params)
    assert unchanged(ft, before)
    # checked_edit takes ``on`` the same way, and a one-argument edit still works.
    checked = ft.checked_edit(ft.prompts.batch([SECOND]), on=first)
    assert all(torch.equal(checked.params[n], both.params[n]) for n in both.params)


def test_a_sequential_rome_edit_is_a_rank_one_update_of_the_weights_the_previous_edit_left(knowing_gpt2, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path))  # its key statistics
    editor = ROME(knowing_gpt2, layer=0, statistics=KeyStatisticsSpec(samples=64, tokens=12, batch_size=16),
                  prefixes=ContextPrefixes(lengths=[3], per_length=2))
    before = snapshot(editor)
    name = editor.editable_names[0]
    first = editor.edit(editor.prompts.batch([FIRST]))
    both = editor.edit(editor.prompts.batch([SECOND]), on=first)
    assert unchanged(editor, before)
    assert torch.linalg.matrix_rank(both.params[name] - first.params[name], rtol=1.0e-4) == 1
    with first.applied():  # the second edit is made on the model the first left, not on the base model
        alone = editor.edit(editor.prompts.batch([SECOND]))
    torch.testing.assert_close(both.params[name], alone.params[name])
    assert not torch.allclose(both.params[name], editor.edit(editor.prompts.batch([SECOND])).params[name])


def test_a_memory_edit_on_a_previous_one_adds_to_a_copy_of_its_memory(cache):
    before = snapshot(cache)
    first = cache.edit(cache.prompts.batch([FIRST]))
    both = cache.edit(cache.prompts.batch([SECOND]), on=first)
    assert unchanged(cache, before) and not both.params
    assert [d.case_id for d in both.router.memory.descriptors] == [FIRST.case_id, SECOND.case_id]
    assert [d.case_id for d in first.router.memory.descriptors] == [FIRST.case_id]  # ``on`` itself is unchanged
    assert success(cache, FIRST, both) == 1.0 and success(cache, SECOND, both) == 1.0
    assert success(cache, SECOND, first) == 0.0


def test_both_kinds_save_and_load_the_same_way(ft, cache, tmp_path):
    for editor in (ft, cache):
        edited = editor.edit(editor.prompts.batch([FIRST]))
        path = edited.save(tmp_path / f"{editor.name}{edited.file_suffix}")
        loaded = editor.load_edit(path)
        assert type(loaded) is type(edited) and loaded.changes_outputs
        examples = editor.prompts.batch([FIRST, SECOND]).in_scope
        assert torch.equal(editor.logits(examples, loaded)[0], editor.logits(examples, edited)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FT.safetensors", "cache.memory.pt"]  # no temporaries


def test_a_saved_edit_for_another_model_or_not_an_edit_is_refused_naming_the_file(ft, tiny_models, tmp_path):
    other = NoEdit(tiny_models["llama"])
    path = ft.edit(ft.prompts.batch([FIRST])).save(tmp_path / "ft.safetensors")
    with pytest.raises(EditFileError, match=f"{path}.*does not have"):
        other.load_edit(path)
    renamed = EditedModel(ft.model, ft.kind, {"transformer.h.1.mlp.c_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(EditFileError, match="other shapes"):
        ft.load_edit(renamed.save(tmp_path / "wrong.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EditFileError, match="junk.safetensors"):
        ft.load_edit(tmp_path / "junk.safetensors")
    with pytest.raises(EditFileError, match="no saved edit"):
        ft.load_edit(tmp_path / "missing.safetensors")
    with pytest.raises(MemoryFileError, match="junk.safetensors"):  # a memory editor reads memory files only
        EditCache(tiny_models["gpt2"]).load_edit(tmp_path / "junk.safetensors")


def test_only_edits_of_one_kind_compose_and_only_weights_materialize(ft, cache):
    weights = ft.edit(ft.prompts.batch([FIRST]))
    memory = cache.edit(cache.prompts.batch([FIRST]))
    for earlier, later in ((weights, memory), (memory, weights)):
        with pytest.raises(TypeError, match="composes with"):
            earlier.then(later)
    assert weights.materialize() is not ft.model
    with pytest.raises(EditFailedError, match="memory"):
        memory.materialize()


def test_a_memory_edit_gives_labelled_positions_only_when_asked_as_a_weight_edit_does(cache):
    edited = cache.edit(cache.prompts.batch([FIRST]))
    examples = cache.prompts.batch([FIRST, SECOND]).in_scope
    everything, labels = edited.logits(examples)
    labelled, kept = edited.logits(examples, labelled_only=True)
    keep = (labels != IGNORE_INDEX).any(0)
    assert torch.equal(kept, labels[:, keep]) and torch.equal(labelled, everything[:, keep])


def test_enn_edits_on_top_from_the_previous_edit_not_from_its_meta_trained_weights(tiny_models):
    enn = ENN(tiny_models["gpt2"], inner_lr=1.0e-30).eval()  # steps too small to move anything
    name = enn.editable_names[0]
    earlier = EditedModel(enn.model, enn.kind, {name: enn.meta_params()[name].detach() + 0.5})
    edited = enn.edit(enn.prompts.batch([FIRST]), on=earlier)
    torch.testing.assert_close(edited.params[name], earlier.params[name])


def test_a_sequential_state_written_before_edits_were_saved_apart_still_resumes(ft, cache, tmp_path):
    sequence = SequentialEditing(measure_every=1, state_dir=tmp_path)
    sequence.records_by_id = {FIRST.case_id: FIRST}
    edited = ft.edit(ft.prompts.batch([FIRST]))
    torch.save({"params": {n: v.cpu() for n, v in edited.params.items()}, "cases": [FIRST.case_id], "curve": [],
                "batches": 1}, tmp_path / "ft.sequential.pt")
    resumed = sequence.current("ft", ft)
    assert all(torch.equal(resumed.params[n], v) for n, v in edited.params.items())
    memory = cache.edit(cache.prompts.batch([FIRST]))
    memory.save(tmp_path / "cache.memory.pt")
    torch.save({"params": {}, "cases": [FIRST.case_id], "curve": [], "batches": 1}, tmp_path / "cache.sequential.pt")
    routed = sequence.current("cache", cache)
    assert isinstance(routed, RoutedModel) and [d.case_id for d in routed.router.memory.descriptors] == ["0"]
    sequence.measure("cache", cache)  # saved in the new layout: the edit file named by the state
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cache")) == \
        ["cache.edit-1.memory.pt", "cache.sequential.pt"]
    assert [d.case_id for d in cache.load_edit(tmp_path / "cache.edit-1.memory.pt").router.memory.descriptors] == ["0"]
