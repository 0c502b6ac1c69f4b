"""Targets (v*, z*) kept on disk: reused for the same fact and settings, never for others, never misread."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_records

import lit_edit.editors.locating as locating_module
from lit_edit.editors import MEMIT, ROME
from lit_edit.editors.key_value import TargetOptimisation
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.editors.target_cache import ARCHIVE_VERSION, export_targets, import_targets
from lit_edit.key_statistics import KeyStatisticsSpec

STATISTICS = KeyStatisticsSpec(samples=64, tokens=12, batch_size=16)
FEW_PREFIXES = ContextPrefixes(lengths=[3], per_length=2)
SHORT_SEARCH = TargetOptimisation(steps=6)


@pytest.fixture(autouse=True)
def checkpoints_in_tmp(tmp_path, monkeypatch):
    """The targets (and key statistics) of each test in its own directory."""
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path))


def memit(model, **kwargs) -> MEMIT:
    return MEMIT(model, layers=[0], statistics=STATISTICS, prefixes=FEW_PREFIXES,
                 target=kwargs.pop("target", SHORT_SEARCH), facts_per_chunk=2, **kwargs)


def deltas(editor, records) -> dict[str, torch.Tensor]:
    edited = editor.edit(editor.prompts.batch(records))
    return {name: edited.params[name] - editor.base_params()[name] for name in editor.editable_names}


def searches_counted(monkeypatch) -> list[int]:
    """Patches the target search to record how many facts each call searches for."""
    counted: list[int] = []
    search = locating_module.optimise_shift

    def counting(*args, **kwargs):
        counted.append(len(args[4].unprefixed))
        return search(*args, **kwargs)

    monkeypatch.setattr(locating_module, "optimise_shift", counting)
    return counted


def test_cached_targets_are_reused_and_edit_as_a_fresh_search_would(knowing_gpt2, tmp_path, monkeypatch):
    records = synthetic_records()[:4]
    uncached = deltas(memit(knowing_gpt2), records[:3])
    assert not (tmp_path / "targets").exists()  # caching is asked for, never a side effect

    first = memit(knowing_gpt2, cache_targets=True)
    written = deltas(first, records[:3])
    (cache,) = first.target_caches.values()
    assert (cache.hits, cache.misses) == (0, 3) and len(list(cache.directory.glob("*.pt"))) == 3
    for file in cache.directory.glob("*.pt"):  # each file holds its own fact, not its search batch's whole tensor
        value = torch.load(file, weights_only=True)["value"]
        assert value.untyped_storage().nbytes() == value.numel() * value.element_size()
    for name in written:
        torch.testing.assert_close(written[name], uncached[name], rtol=1e-4, atol=1e-6)

    # A new editor (a new process) with the same settings searches only for the fact it has not seen.
    counted = searches_counted(monkeypatch)
    second = memit(knowing_gpt2, cache_targets=True)
    reused = deltas(second, records[:3])
    (second_cache,) = second.target_caches.values()
    assert counted == [] and second_cache.hits == 3
    for name in written:
        torch.testing.assert_close(reused[name], written[name], rtol=0, atol=0)
    deltas(second, records)
    assert counted == [1]


def test_targets_are_keyed_by_the_search_and_a_bad_file_is_searched_again(knowing_gpt2, monkeypatch):
    records = synthetic_records()[:2]
    editor = memit(knowing_gpt2, cache_targets=True)
    deltas(editor, records[:1])
    (cache,) = editor.target_caches.values()
    (saved,) = cache.directory.glob("*.pt")

    counted = searches_counted(monkeypatch)
    deltas(memit(knowing_gpt2, cache_targets=True, target=TargetOptimisation(steps=5)), records[:1])
    assert counted == [1]  # other search settings: another directory, so searched again

    saved.write_bytes(b"not a tensor file")
    with pytest.warns(UserWarning, match="unreadable"):
        deltas(memit(knowing_gpt2, cache_targets=True), records[:1])
    assert counted == [1, 1] and torch.load(saved, weights_only=True)["request"]["subject"] == records[0].subject

    # ROME writes a batch's facts one after another: only the first is searched on the unedited model and cached.
    rome = ROME(knowing_gpt2, layer=0, statistics=STATISTICS, prefixes=FEW_PREFIXES, target=SHORT_SEARCH,
                cache_targets=True)
    deltas(rome, records)
    (rome_cache,) = rome.target_caches.values()
    assert (rome_cache.hits, rome_cache.misses) == (0, 1) and len(list(rome_cache.directory.glob("*.pt"))) == 1


def test_targets_carried_in_an_archive_are_reused_elsewhere(knowing_gpt2, tmp_path, monkeypatch):
    records = synthetic_records()[:2]
    searched = deltas(memit(knowing_gpt2, cache_targets=True), records)
    archive = tmp_path / "carried" / "targets.pt"
    assert export_targets(archive) == 2

    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path / "elsewhere"))  # another machine: an empty cache
    assert import_targets(archive) == 2 and import_targets(archive) == 0  # files already there are left alone
    counted = searches_counted(monkeypatch)
    carried = deltas(memit(knowing_gpt2, cache_targets=True), records)
    assert counted == []
    for name in searched:
        torch.testing.assert_close(carried[name], searched[name], rtol=0, atol=0)


def test_an_archive_that_would_write_outside_the_cache_is_refused(tmp_path):
    archive = tmp_path / "bad.pt"
    torch.save({"version": ARCHIVE_VERSION, "entries": {"../../escape/m/s/f.pt": {}}}, archive)
    with pytest.raises(ValueError, match="escape"):
        import_targets(archive, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    torch.save({"something": "else"}, archive)
    with pytest.raises(ValueError, match="not a target archive"):
        import_targets(archive, tmp_path / "root")
