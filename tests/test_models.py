"""Base models by configuration: a ``.gguf`` file loads into the same model that was written into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import FineTune
from lit_edit.models import ModelSpec, editable_parameters, load_model, load_tokenizer

N_HEADS, N_KV_HEADS = 4, 2


def interleave_rotary_halves(weight: torch.Tensor, n_heads: int) -> np.ndarray:
    """llama.cpp stores q/k projections with each head's rotary halves interleaved; transformers undoes it on load."""
    head_dim = weight.shape[0] // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(weight.shape).numpy()


def write_tiny_llama_gguf(path: Path) -> LlamaForCausalLM:
    """Write a tiny random Llama with a byte-level vocabulary as an F32 GGUF file; return the model written."""
    from gguf import GGUFWriter

    tokens = ["<|endoftext|>"] + [bytes_to_unicode()[b] for b in range(256)]
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=N_HEADS,
                         num_key_value_heads=N_KV_HEADS, intermediate_size=64, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_rope_dimension_count(32 // N_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * 256)
    writer.add_token_scores([0.0] * len(tokens))  # no merges: transformers derives them (none) from the scores
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    writer.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    writer.add_tensor("output.weight", state["lm_head.weight"].numpy())
    for i in range(2):
        layer = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[layer + "input_layernorm.weight"].numpy())
        writer.add_tensor(f"blk.{i}.attn_q.weight", interleave_rotary_halves(state[layer + "self_attn.q_proj.weight"], N_HEADS))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          interleave_rotary_halves(state[layer + "self_attn.k_proj.weight"], N_KV_HEADS))
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[layer + "self_attn.v_proj.weight"].numpy())
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[layer + "self_attn.o_proj.weight"].numpy())
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[layer + "post_attention_layernorm.weight"].numpy())
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            writer.add_tensor(f"blk.{i}.ffn_{ours}.weight", state[layer + f"mlp.{theirs}.weight"].numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def test_gguf_file_spec_loads_the_model_written_and_edits(tmp_path):
    source = write_tiny_llama_gguf(tmp_path / "tiny-llama.F32.gguf")
    spec = ModelSpec(name=str(tmp_path / "tiny-llama.F32.gguf"), editable=["model.layers.1.mlp.down_proj.weight"])
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    input_ids = tokenizer("The Mona Lisa was painted by", return_tensors="pt")["input_ids"]
    assert input_ids.shape[1] == len("The Mona Lisa was painted by")  # byte-level, no merges
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, source(input_ids).logits, rtol=1e-5, atol=1e-5)
    assert list(editable_parameters(model, spec.editable)) == spec.editable
    editor = FineTune(spec, steps=20, lr=1.0e-2)
    record = EditRecord(case_id="0", prompt="The Mona Lisa was painted by", target_new="Bo", subject="The Mona Lisa",
                        out_of_scope=(LabeledPrompt("The capital of France is", "Pa"),))
    batch = editor.prompts.batch([record])
    pre, labels = editor.logits(batch.edit)
    post, _ = editor.logits(batch.edit, editor.edit(batch))
    assert (post.argmax(-1)[labels != -100] == labels[labels != -100]).all()
    assert not (pre.argmax(-1)[labels != -100] == labels[labels != -100]).all()
