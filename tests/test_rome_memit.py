"""ROME and MEMIT's algebra on a tiny GPT-2 (its MLPs are GPT-2 Conv1D, stored (in, out)); that edits change the
in-scope answer and keep others is tested on the real model (tests/test_real_model.py): a 2-layer model reads its facts
at the last token, not at the subject, so there is nothing there for a subject-keyed edit to rewrite."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from conftest import synthetic_records

import lit_edit.editors.key_value as key_value
from lit_edit.cli import evaluate_main
from lit_edit.data.readers import write_edit_records
from lit_edit.data.records import EditRecord
from lit_edit.editors import MEMIT, ROME, EditFailedError
from lit_edit.editors.key_value import (
    TargetOptimisation,
    cut_rows,
    essence_rows,
    fact_rows,
    optimise_shift,
    subject_keys,
)
from lit_edit.editors.rome import ContextPrefixes
from lit_edit.key_statistics import KeyStatisticsSpec, regularised_inverse_solve
from lit_edit.subject_tokens import SubjectNotFoundError

STATISTICS = KeyStatisticsSpec(samples=64, tokens=12, batch_size=16)
FEW_PREFIXES = ContextPrefixes(lengths=[3], per_length=2)


@pytest.fixture(autouse=True)
def checkpoints_in_tmp(tmp_path_factory, monkeypatch):
    """Key statistics are cached under $LIT_EDIT_CHECKPOINTS: one directory for this module's tests."""
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path_factory.getbasetemp() / "rome_checkpoints"))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rome(model, **kwargs) -> ROME:
    return ROME(model, layer=kwargs.pop("layer", 0), statistics=STATISTICS, prefixes=kwargs.pop("prefixes", FEW_PREFIXES),
                **kwargs)


def test_rome_update_is_rank_one_and_writes_the_value_exactly(knowing_gpt2):
    editor = rome(knowing_gpt2)
    record = synthetic_records()[3]
    batch = editor.prompts.batch([record])
    edited = editor.edit(batch)
    name = editor.editable_names[0]
    stored_delta = edited.params[name] - editor.base_params()[name]
    assert torch.linalg.matrix_rank(stored_delta, rtol=1.0e-4) == 1

    # k*, k and v* as ROME defines them, recomputed on the unedited model (the search is deterministic).
    module = editor.layout.mlp_out(0)
    request = editor.requests(batch)[0]
    rows = fact_rows(editor.prompts, [request], editor.prefixes())
    averaged, own = subject_keys(editor.model, {}, module, rows)
    assert not torch.allclose(averaged, own, atol=1.0e-3)  # the prefixes do move the key
    value, shift = optimise_shift(editor.model, {}, editor.kind, module, rows,
                                  essence_rows(editor.tokenizer, [request], editor.device), editor.target)
    written = own[0] @ edited.params[name] + module.bias  # Conv1D: x @ W + b
    torch.testing.assert_close(written, (value + shift)[0], rtol=1.0e-4, atol=1.0e-4)

    # The update's direction is C⁻¹k* (k* averaged over the prefixes): a key orthogonal to it is left alone.
    direction = torch.linalg.solve(editor.key_moment(0), averaged[0].double()).float()
    other = torch.randn(direction.shape[0], generator=torch.Generator().manual_seed(0))
    other = other - direction * (direction @ other) / (direction @ direction)
    torch.testing.assert_close(other @ stored_delta, torch.zeros(stored_delta.shape[1]), rtol=0.0, atol=1.0e-4)


def test_rome_refuses_a_prompt_without_its_subject(knowing_gpt2):
    editor = rome(knowing_gpt2)
    record = EditRecord(case_id="x", prompt="the colour of s1 is", target_new="c5", subject="s2",
                        out_of_scope=synthetic_records()[5].out_of_scope)
    with pytest.raises(SubjectNotFoundError, match="'s2' does not occur"):
        editor.edit(editor.prompts.batch([record]))
    no_subject = EditRecord(case_id="y", prompt="the colour of s1 is", target_new="c5",
                            out_of_scope=synthetic_records()[5].out_of_scope)
    with pytest.raises(ValueError, match="has no subject"):
        editor.edit(editor.prompts.batch([no_subject]))
    # Each is a refused edit, which an evaluation records as failed (and a ValueError, as before).
    assert issubclass(SubjectNotFoundError, EditFailedError) and issubclass(SubjectNotFoundError, ValueError)
    with pytest.raises(EditFailedError, match="has no subject"):
        editor.edit(editor.prompts.batch([no_subject]))
    long_prompt = replace(synthetic_records()[3], prompt=" ".join(["alpha"] * 20) + " the home of s3 is")
    long_target = replace(synthetic_records()[3], target_new=" ".join(["h1"] * 16))
    batches = [editor.prompts.batch([record]) for record in (long_prompt, long_target)]  # built by a longer limit
    editor.prompts.max_length = 16
    with pytest.raises(EditFailedError, match="more than max_length 16"):
        editor.edit(batches[0])
    with pytest.raises(EditFailedError, match="16 tokens"):
        editor.edit(batches[1])


def test_an_evaluation_records_a_record_whose_subject_is_not_in_its_prompt_as_failed_and_goes_on(
        tiny_models, tmp_path, capsys):
    """Issue 21, item 7: the record used to abort evaluate.py with a traceback, and its rerun crashed on it again."""
    records = synthetic_records()[:3]
    records[1] = replace(records[1], subject="s39")  # "the home of s1 is"
    data = write_edit_records(records, tmp_path / "edits.json")
    spec = tiny_models["gpt2"]
    rome_settings = {"model": {"name": spec.name, "editable": spec.editable}, "layer": 0,
                     "statistics": {"samples": 16, "tokens": 8, "batch_size": 16},
                     "prefixes": {"lengths": [3], "per_length": 1}, "target": {"steps": 2}}
    config = {"model": {"output": str(tmp_path / "r.json"),
                        "editors": {"rome": {"class_path": "lit_edit.editors.ROME", "init_args": rome_settings}}},
              "data": {"test": str(data)},
              "trainer": {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "inference_mode": False,
                          "enable_model_summary": False, "callbacks": []}}
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(config))
    for _ in range(2):  # the rerun resumes from the log: the failure is recorded, not met again
        evaluate_main(["--config", str(tmp_path / "evaluate.yaml")], default_config=None)
        (result,) = json.loads((tmp_path / "r.json").read_text())
        assert (result["edits"], result["failed_edits"]) == (2, 1)
        (failure,) = result["failures"]
        assert failure["cases"] == ["1"] and failure["reason"].startswith("SubjectNotFoundError: subject 's39'")


def test_nan_in_the_value_search_refuses_the_edit_and_leaves_the_model(knowing_gpt2, monkeypatch):
    editor = rome(knowing_gpt2)
    before = snapshot(editor.model)
    monkeypatch.setattr(key_value, "example_nll", lambda logits, labels: torch.full(logits.shape[:1], float("nan")))
    with pytest.raises(EditFailedError, match="diverged"):
        editor.edit(editor.prompts.batch([synthetic_records()[3]]))
    assert all(torch.equal(v, editor.model.state_dict()[k]) for k, v in before.items())


def test_facts_searched_together_get_the_shift_each_would_get_alone(knowing_gpt2):
    """MEMIT searches a chunk of facts in one batch; each fact stops when its own target is reached, so one
    that converges early is not pushed further while the others go on (and its rows stop costing compute)."""
    editor = rome(knowing_gpt2)
    module = editor.layout.mlp_out(0)
    requests = editor.requests(editor.prompts.batch(synthetic_records()[:4]))
    settings = TargetOptimisation(stop_nll=0.5)

    def search(chosen):
        rows = fact_rows(editor.prompts, chosen, editor.prefixes())
        return optimise_shift(editor.model, {}, editor.kind, module, rows,
                              essence_rows(editor.tokenizer, chosen, editor.device), settings)

    _, together = search(requests)
    alone = torch.cat([search([request])[1] for request in requests])
    assert len({float(s.norm()) for s in alone}) == len(requests)  # the facts did not all take the same steps
    torch.testing.assert_close(together, alone, rtol=1.0e-4, atol=1.0e-4)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_the_search_runs_only_the_tokens_from_the_subject_on_and_finds_the_same_shift(tiny_models, architecture):
    """The tokens before the subject's last token cannot see δ: read once, they are not run at every step, and the
    search is the one over whole rows (per-row cuts at different places, one fact whose subject starts its prompt)."""
    editor = ROME(tiny_models[architecture], layer=0, statistics=STATISTICS, prefixes=FEW_PREFIXES)
    module = editor.layout.mlp_out(0)  # of two blocks: δ at the subject reaches the target through block 1
    requests = editor.requests(editor.prompts.batch(synthetic_records()[:3]))
    requests[0] = replace(requests[0], prompt=f"{requests[0].subject} has the colour")
    settings = TargetOptimisation(steps=4, stop_nll=0.0)
    rows = fact_rows(editor.prompts, requests, editor.prefixes())
    essence = essence_rows(editor.tokenizer, requests, editor.device)
    cut = cut_rows(editor.model, {}, rows.examples, rows.subject_position)
    assert cut.past is not None and cut.examples.input_ids.shape[1] < rows.examples.input_ids.shape[1]
    assert int(cut.offset.min()) >= 0 and len(set(cut.offset.tolist())) > 1
    whole = optimise_shift(editor.model, {}, editor.kind, module, rows, essence, settings, reuse_prefix_states=False)
    reused = optimise_shift(editor.model, {}, editor.kind, module, rows, essence, settings)
    torch.testing.assert_close(reused, whole, rtol=1.0e-4, atol=1.0e-5)
    assert bool((whole[1] != 0).all())  # every fact's δ moved: the comparison is not of zeros


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_reading_an_early_layer_runs_nothing_after_it(tiny_models, architecture):
    """MEMIT's keys and states come from blocks far below the top: the pass stops at the last one read, with the
    same activations as the whole pass, and the blocks above and the output head do not run."""
    editor = ROME(tiny_models[architecture], layer=0, statistics=STATISTICS, prefixes=FEW_PREFIXES)
    rows = fact_rows(editor.prompts, editor.requests(editor.prompts.batch(synthetic_records()[:3])), [])
    inputs = {"input_ids": rows.examples.input_ids, "attention_mask": rows.examples.attention_mask}
    first, above = editor.layout.blocks[0], editor.layout.blocks[1]
    calls = []
    above.register_forward_hook(lambda *_: calls.append("block 1"))
    editor.model.get_output_embeddings().register_forward_hook(lambda *_: calls.append("head"))
    with torch.no_grad(), key_value.captured(first) as whole:
        key_value.run(editor.model, {}, **inputs)
    assert calls == ["block 1", "head"]
    calls.clear()
    with torch.no_grad(), key_value.captured(first) as stopped:
        key_value.run_until(editor.model, {}, first, **inputs)
    assert calls == []
    torch.testing.assert_close(stopped["output"], whole["output"])


def test_memit_with_one_fact_and_layer_is_rome_shrunk_by_its_regulariser(knowing_gpt2):
    """Sherman-Morrison: with one key, MEMIT's ΔW = ROME's ΔW · s/(λ + s), s = kᵀC⁻¹k.

    Same target: no prefixes, and no penalty on ‖δ‖ (ROME measures it against the MLP's output, MEMIT against the
    hidden state, which are different norms); adding δ to the MLP output or to the block output is the same."""
    bare = ContextPrefixes(per_length=0)
    free = TargetOptimisation(weight_decay=0.0, clamp_norm=1.0e6)
    rome_editor = rome(knowing_gpt2, prefixes=bare, target=free)
    memit = MEMIT(knowing_gpt2, layers=[0], statistics=STATISTICS, prefixes=bare, target=free, moment_weight=2.0)
    batch = rome_editor.prompts.batch([synthetic_records()[3]])
    name = rome_editor.editable_names[0]
    rome_delta = rome_editor.edit(batch).params[name] - rome_editor.base_params()[name]
    memit_delta = memit.edit(batch).params[name] - memit.base_params()[name]
    rows = fact_rows(rome_editor.prompts, rome_editor.requests(batch), [])
    key = subject_keys(rome_editor.model, {}, rome_editor.layout.mlp_out(0), rows)[0][0].double()
    s = key @ regularised_inverse_solve(rome_editor.key_moment(0), key)
    torch.testing.assert_close(memit_delta, rome_delta * (s / (2.0 + s)).float(), rtol=1.0e-3, atol=1.0e-5)


def test_causal_tracing_can_choose_the_layers(tmp_path, monkeypatch):
    """``layer_selection`` replaces the configured layer(s) by the traced one (and its neighbours, for MEMIT), below
    the last block (an edit there reaches no answer)."""
    from conftest import make_tiny_model

    from lit_edit.tracing import LayerSelection

    four_blocks = make_tiny_model(tmp_path / "gpt2", "gpt2", n_layer=4)
    traced_at = {"layer": 1}
    monkeypatch.setattr(LayerSelection, "select", lambda self, model, tokenizer, layout=None: traced_at["layer"])
    traced = rome(four_blocks, layer_selection=LayerSelection())
    assert traced.layer == 1 and traced.editable_names == ["transformer.h.1.mlp.c_proj.weight"]
    memit = MEMIT(four_blocks, layers=[0], statistics=STATISTICS, layer_selection=LayerSelection(neighbours=1))
    assert memit.layers == [0, 1, 2]
    traced_at["layer"] = 3  # the last block: the block below it is chosen, and MEMIT's window stops there too
    assert rome(four_blocks, layer_selection=LayerSelection()).layer == 2
    assert MEMIT(four_blocks, layers=[0], statistics=STATISTICS,
                 layer_selection=LayerSelection(neighbours=1)).layers == [1, 2]
