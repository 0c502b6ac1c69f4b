"""Causal tracing: a hand-built model whose fact lives in one planted MLP is traced to that layer; on tiny
Hugging Face models the trace obeys what must hold whatever the weights; the command writes PNG and JSON."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import word_tokenizer
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_edit.__main__ import main as lit_edit_main
from lit_edit.model_layout import ModelLayout
from lit_edit.subject_tokens import SubjectNotFoundError, subject_token_span
from lit_edit.tracing import Fact, LayerSelection, Tracer, mlp_effect_by_layer, read_known_facts, trace_fact

PLANTED_LAYER = 2
LAYERS = 4


class MeanAttention(nn.Module):
    """Each position receives the mean, over itself and earlier positions, of the answer feature only."""

    def __init__(self, dim: int, answer_dim: int) -> None:
        super().__init__()
        self.o_proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.o_proj.weight.zero_()
            self.o_proj.weight[answer_dim, answer_dim] = 1.0

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, None]:
        counts = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :, None]
        return self.o_proj(hidden.cumsum(1) / counts), None


class MLP(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(dim, inner)
        self.down_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.relu(self.up_proj(hidden)))


class Block(nn.Module):
    def __init__(self, dim: int, inner: int, answer_dim: int) -> None:
        super().__init__()
        self.self_attn = MeanAttention(dim, answer_dim)
        self.mlp = MLP(dim, inner)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(hidden)[0]
        return hidden + self.mlp(hidden)


class PlantedFactModel(nn.Module):
    """Token embeddings are one-hot. Layer PLANTED_LAYER's MLP has three neurons forming a bump that fires only
    where the subject feature is near 1 (the subject's own token) and writes the answer feature there; attention
    carries that feature to the last token, where the head turns it into the answer's logit. Every other MLP is
    small random noise, so only the planted MLP's output at the subject carries the fact."""

    def __init__(self, vocab: int, subject: int, answer: int) -> None:
        super().__init__()
        dim, inner, answer_dim = vocab + 1, 3, vocab
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, inner, answer_dim) for _ in range(LAYERS))
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.embed_tokens.weight.copy_(torch.eye(vocab, dim))
            for layer, block in enumerate(self.layers):
                if layer == PLANTED_LAYER:
                    up = torch.zeros(inner, dim)
                    up[:, subject] = 10.0
                    block.mlp.up_proj.weight.copy_(up)
                    block.mlp.up_proj.bias.copy_(torch.tensor([-5.0, -10.0, -15.0]))
                    down = torch.zeros(dim, inner)
                    down[answer_dim] = torch.tensor([10.0, -20.0, 10.0])
                    block.mlp.down_proj.weight.copy_(down)
                else:
                    block.mlp.up_proj.weight.copy_(torch.randn(inner, dim, generator=generator) * 0.05)
                    block.mlp.up_proj.bias.zero_()
                    block.mlp.down_proj.weight.copy_(torch.randn(dim, inner, generator=generator) * 0.05)
            self.lm_head.weight.zero_()
            self.lm_head.weight[answer, answer_dim] = 1.0

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def forward(self, input_ids: torch.Tensor, **unused: object) -> SimpleNamespace:
        hidden = self.embed_tokens(input_ids)
        for block in self.layers:
            hidden = block(hidden)
        return SimpleNamespace(logits=self.lm_head(hidden))


@pytest.fixture(scope="module")
def planted():
    tokenizer = word_tokenizer()
    subject, answer = tokenizer.convert_tokens_to_ids(["s7", "c3"])
    return PlantedFactModel(len(tokenizer), subject, answer).eval(), tokenizer


PLANTED_FACTS = [Fact("the colour of s7 is", "s7", "c3"), Fact("where does s7 live ? in", "s7", "c3"),
                 Fact("s7 has the colour", "s7", "c3")]


def test_tracing_a_hand_built_model_finds_the_planted_mlp(planted):
    model, tokenizer = planted
    trace = trace_fact(model, tokenizer, PLANTED_FACTS[0], noise=5.0, samples=20, window=1)
    assert trace.clean_prob > 0.5 and trace.corrupted_prob < 0.5 * trace.clean_prob  # the noise hides the fact
    subject_token = trace.last_subject_token
    assert trace.tokens[subject_token] == "s7"
    mlp = trace.indirect_effect("mlp")
    assert int(mlp[subject_token].argmax()) == PLANTED_LAYER
    assert mlp[subject_token, PLANTED_LAYER] > 0.5 * (trace.clean_prob - trace.corrupted_prob)
    assert mlp[:, [i for i in range(LAYERS) if i != PLANTED_LAYER]].abs().max() < 0.05
    # The subject's hidden state carries the fact: restored there at any layer but the last (after which no
    # attention moves it), the answer comes back; before the subject nothing was corrupted, so nothing changes.
    hidden = trace.indirect_effect("hidden")
    assert (hidden[subject_token, :-1] > 0.5 * (trace.clean_prob - trace.corrupted_prob)).all()
    assert hidden[:subject_token].abs().max() < 1e-6


def test_layer_selection_picks_the_planted_layer(planted):
    model, tokenizer = planted
    effects = mlp_effect_by_layer(model, tokenizer, PLANTED_FACTS, noise_scale=40.0, samples=20)
    assert effects.shape == (LAYERS,) and int(effects.argmax()) == PLANTED_LAYER


def test_layer_selection_from_a_known_facts_file(planted, tmp_path):
    model, tokenizer = planted
    path = tmp_path / "known.json"
    path.write_text(json.dumps([{"prompt": f.prompt, "subject": f.subject, "attribute": f.answer}
                                for f in PLANTED_FACTS]))
    selection = LayerSelection(facts=f"{path}#0:2", answer="given", samples=20, noise_scale=40.0, neighbours=1)
    assert selection.select(model, tokenizer) == PLANTED_LAYER
    assert selection.select_layers(model, tokenizer) == [PLANTED_LAYER - 1, PLANTED_LAYER, PLANTED_LAYER + 1]
    # ROME and MEMIT's window stops below the last block (PLANTED_LAYER + 1 = 3 of 4): their edit there reaches no answer.
    assert selection.select_layers(model, tokenizer, top=PLANTED_LAYER) == [PLANTED_LAYER - 1, PLANTED_LAYER]
    assert LayerSelection(facts=f"{path}#0:2", answer="given", samples=20, noise_scale=40.0,
                          neighbours=0).select_layers(model, tokenizer) == [PLANTED_LAYER]


def test_known_facts_reader_names_file_and_field(tmp_path):
    path = tmp_path / "known.json"
    path.write_text(json.dumps([{"prompt": "the colour of s1 is", "subject": "s1", "attribute": "c1"},
                                {"prompt": "the colour of s2 is", "attribute": "c2"}]))
    with pytest.raises(ValueError, match=r"known.json: record 1 .*field 'subject'"):
        read_known_facts(str(path))
    path.write_text(json.dumps([{"prompt": "the colour of s1 is", "subject": "s1", "attribute": "c1"}] * 3))
    assert read_known_facts(f"{path}#1:2") == [Fact("the colour of s1 is", "s1", "c1")]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_trace_invariants_on_tiny_models(tiny_models, arch):
    """Whatever the weights: restoring the last layer's output at the last token gives the clean probability;
    states before the subject are not corrupted, so restoring them changes nothing; the model is left as it was."""
    spec = tiny_models[arch]
    model = AutoModelForCausalLM.from_pretrained(spec.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = trace_fact(model, tokenizer, Fact("the colour of s1 is", "s1"), samples=4, window=3)
    layers = ModelLayout(model).num_layers
    assert trace.subject_span == (3, 4) and trace.tokens[3] == "s1"
    for kind in ("hidden", "mlp", "attention"):
        assert trace.restored[kind].shape == (5, layers)
        torch.testing.assert_close(trace.restored[kind][:3], torch.full((3, layers), trace.corrupted_prob),
                                   atol=1e-5, rtol=1e-4)
    assert trace.restored["hidden"][-1, -1] == pytest.approx(trace.clean_prob, rel=1e-4, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # Batched restoration (all tokens of a layer in one pass) agrees with restoring one token at a time.
    tracer = Tracer(model, tokenizer)
    alone = tracer.trace(Fact("the colour of s1 is", "s1"), trace.noise, samples=4, window=3, positions=[3])
    torch.testing.assert_close(alone.restored["mlp"][3], trace.restored["mlp"][3], atol=1e-5, rtol=1e-4)


def test_a_prompt_without_its_subject_is_a_clear_error(tiny_models):
    spec = tiny_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(spec.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.name)
    with pytest.raises(SubjectNotFoundError, match="'s9' does not occur in prompt 'the colour of s1 is'"):
        trace_fact(model, tokenizer, Fact("the colour of s1 is", "s9"), samples=2)


def test_a_subject_that_tokenizes_differently_inside_the_prompt_is_corrupted_where_it_is(tmp_path):
    """Byte-level BPE spells " Paris" (inside the prompt) with other tokens than "Paris" (alone)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = ["the city of Paris is in France", "Paris is a city", "the capital of France is Paris"] * 20
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")
    prompt, subject = "the city of Paris is in", "Paris"
    alone = tokenizer(subject, add_special_tokens=False)["input_ids"]
    inside = tokenizer(prompt)["input_ids"]
    assert not any(inside[i:i + len(alone)] == alone for i in range(len(inside)))  # not a sub-list: naive search fails
    start, stop = subject_token_span(tokenizer, prompt, subject)
    assert tokenizer.decode(inside[start:stop]).strip() == "Paris"
    config = LlamaConfig(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    trace = trace_fact(model, tokenizer, Fact(prompt, subject), samples=2, window=1, kinds=("hidden",))
    assert trace.subject_span == (start, stop)
    torch.testing.assert_close(trace.restored["hidden"][:start], torch.full((start, 2), trace.corrupted_prob),
                               atol=1e-5, rtol=1e-4)


def test_trace_command_writes_png_and_json(tiny_models, tmp_path, capsys):
    spec = tiny_models["llama"]
    lit_edit_main(["trace", "--model", spec.name, "--prompt", "the colour of s1 is", "--subject", "s1",
                   "--samples", "2", "--window", "2", "--out", str(tmp_path / "trace")])
    written = json.loads((tmp_path / "trace" / "trace_0.json").read_text())
    assert (tmp_path / "trace" / "trace_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["subject_span"] == [3, 4] and written["tokens"][3] == "s1"
    assert set(written["indirect_effect"]) == {"hidden", "mlp", "attention"}
    assert len(written["indirect_effect"]["mlp"]) == 5 and len(written["indirect_effect"]["mlp"][0]) == 2
    summary = json.loads((tmp_path / "trace" / "summary.json").read_text())
    assert summary["facts"] == 1 and 0 <= summary["selected_layer"] < 2
    assert (tmp_path / "trace" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "trace_0.png" in capsys.readouterr().out


def test_trace_command_refuses_a_prompt_without_its_subject(tiny_models, tmp_path, capsys):
    spec = tiny_models["llama"]
    with pytest.raises(SystemExit) as exit_info:
        lit_edit_main(["trace", "--model", spec.name, "--prompt", "the colour of s1 is", "--subject", "s2",
                       "--out", str(tmp_path / "trace")])
    assert exit_info.value.code == 2
    assert "'s2' does not occur in prompt" in capsys.readouterr().err
    assert not (tmp_path / "trace").exists()
