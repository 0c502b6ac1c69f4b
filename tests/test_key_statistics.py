"""C = E[kkᵀ]: matches a hand computation, is cached and reused, resumes after an interruption, is regularised."""

from __future__ import annotations

import pytest
import torch

import lit_edit.key_statistics as key_statistics
from lit_edit.__main__ import main
from lit_edit.key_statistics import (
    KeyStatisticsSpec,
    PassageStream,
    estimate_key_moments,
    regularised_inverse_solve,
)
from lit_edit.model_layout import ModelLayout
from lit_edit.models import load_model, load_tokenizer

SPEC = KeyStatisticsSpec(samples=40, tokens=10, batch_size=8, save_every=1)


@pytest.fixture
def gpt2(tiny_models):
    model, tokenizer = load_model(tiny_models["gpt2"]), load_tokenizer(tiny_models["gpt2"])
    return model, tokenizer, ModelLayout(model)


def test_moments_match_a_hand_computation_and_are_reused(gpt2, tmp_path, monkeypatch):
    model, tokenizer, layout = gpt2
    moments = estimate_key_moments(model, tokenizer, layout, [0, 1], SPEC, root=tmp_path, progress=False)
    stream = PassageStream(model, tokenizer, SPEC)
    keys = []
    for index in range(stream.batches()):
        ids, mask = stream.batch(index)
        with key_statistics.captured_inputs({"k": layout.mlp_out(1)}) as seen, torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        keys.append(seen["k"][mask.bool()].double())
    keys = torch.cat(keys)
    assert keys.shape[0] == 40 * 10
    torch.testing.assert_close(moments[1], (keys.T @ keys / keys.shape[0]).float())

    def no_text(*args, **kwargs):
        raise AssertionError("the cached statistics should have been read, not recomputed")

    monkeypatch.setattr(PassageStream, "batch", no_text)
    again = estimate_key_moments(model, tokenizer, layout, [1, 0], SPEC, root=tmp_path, progress=False)
    assert all(torch.equal(again[layer], moments[layer]) for layer in (0, 1))


def test_an_interrupted_estimate_resumes_where_it_stopped(gpt2, tmp_path, monkeypatch):
    model, tokenizer, layout = gpt2
    reference = estimate_key_moments(model, tokenizer, layout, [1], SPEC, root=tmp_path / "whole", progress=False)
    real_batch, asked = PassageStream.batch, []

    def interrupted(self, index):
        asked.append(index)
        if index == 3:
            raise KeyboardInterrupt
        return real_batch(self, index)

    monkeypatch.setattr(PassageStream, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        estimate_key_moments(model, tokenizer, layout, [1], SPEC, root=tmp_path / "cut", progress=False)
    asked.clear()
    monkeypatch.setattr(PassageStream, "batch", lambda self, index: asked.append(index) or real_batch(self, index))
    resumed = estimate_key_moments(model, tokenizer, layout, [1], SPEC, root=tmp_path / "cut", progress=False)
    assert asked == [3, 4]  # batches 0-2 were saved before the interruption
    torch.testing.assert_close(resumed[1], reference[1])


def test_a_corrupt_cache_is_recomputed_with_a_warning(gpt2, tmp_path):
    model, tokenizer, layout = gpt2
    first = estimate_key_moments(model, tokenizer, layout, [0], SPEC, root=tmp_path, progress=False)
    path = key_statistics.cache_path(model, layout.mlp_out_name(0), SPEC, tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=f"{path.name}.*unreadable"):
        again = estimate_key_moments(model, tokenizer, layout, [0], SPEC, root=tmp_path, progress=False)
    torch.testing.assert_close(again[0], first[0])


def test_a_corpus_file_is_read_and_a_missing_one_named(gpt2, tmp_path):
    model, tokenizer, layout = gpt2
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the colour of s1 is c2\n\nthe home of s3 is h4\n")
    spec = KeyStatisticsSpec(corpus=str(corpus), samples=4, tokens=8, batch_size=2)
    moments = estimate_key_moments(model, tokenizer, layout, [1], spec, root=tmp_path, progress=False)
    assert torch.isfinite(moments[1]).all() and moments[1].trace() > 0
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        estimate_key_moments(model, tokenizer, layout, [1], KeyStatisticsSpec(corpus=str(tmp_path / "nowhere.txt")),
                             root=tmp_path, progress=False)


def test_a_singular_moment_is_regularised_with_a_warning():
    key = torch.tensor([1.0, 2.0, 0.0])
    singular = torch.outer(key, key)  # rank one
    with pytest.warns(UserWarning, match="ill-conditioned"):
        solution = regularised_inverse_solve(singular, key)
    assert torch.isfinite(solution).all()
    well = torch.diag(torch.tensor([2.0, 1.0, 4.0]))
    torch.testing.assert_close(regularised_inverse_solve(well, key), torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64))


def test_the_command_estimates_every_layer_in_one_pass_into_the_editors_cache(tiny_models, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("LIT_EDIT_CHECKPOINTS", str(tmp_path))
    spec = tiny_models["llama"]
    passes = []
    stream_batch = PassageStream.batch
    monkeypatch.setattr(PassageStream, "batch", lambda self, index: passes.append(index) or stream_batch(self, index))
    main(["key-statistics", "--model", spec.name, "--layers", "1", "0", "--samples", "16", "--tokens", "6",
          "--batch-size", "8"])
    assert passes == [0, 1]  # both layers from the same two batches of passages
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all("keys=96" in line and "sum-sha256=" in line for line in printed)  # 16 × 6

    # An editor with the same settings finds C cached and samples nothing.
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    statistics = KeyStatisticsSpec(samples=16, tokens=6, batch_size=8)
    moments = estimate_key_moments(model, tokenizer, ModelLayout(model), [0, 1], statistics, progress=False)
    assert passes == [0, 1] and set(moments) == {0, 1}
    assert all(torch.isfinite(moment).all() and moment.abs().sum() > 0 for moment in moments.values())
