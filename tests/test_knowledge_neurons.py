"""Knowledge Neurons: integrated gradients find a neuron planted in a tiny Llama's MLP; the edit rewrites exactly
the found neurons' values (Linear and GPT-2 Conv1D alike), moves the planted fact and leaves the model untouched."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import make_tiny_model, synthetic_records
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_edit.cli import CONFIG_DIR, evaluate_main
from lit_edit.config_files import load_config
from lit_edit.data.records import EditRecord, LabeledPrompt
from lit_edit.editors import EditFailedError, KnowledgeNeurons
from lit_edit.editors.knowledge_neurons import integrated_gradients, knowledge_neurons
from lit_edit.metrics import edit_success
from lit_edit.model_layout import ModelLayout

LAYER, NEURON = 1, 17
PROMPTS = ("the colour of s5 is", "what colour is s5 ? it is")
OUT_OF_SCOPE = ("the home of s9 is", "where does s3 live ? in")


def plant_neuron(directory, answer: str = "c2", other: str = "c6"):
    """Neuron NEURON of layer LAYER fires on PROMPTS' last token and is silent at every token of OUT_OF_SCOPE
    (its gate and up keys solve k . x = 1 on the former's MLP inputs, -3 on the latter's), and its value is the
    answer's output embedding, strongly enough that the model answers ``answer``. The output embeddings of ``answer``
    and ``other`` are made long enough (norm 2) for one direction to decide the answer."""
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    mlp = model.model.layers[LAYER].mlp
    inputs = []
    handle = mlp.register_forward_pre_hook(lambda module, args: inputs.append(args[0][0].detach()))
    with torch.no_grad():
        for prompt in (*PROMPTS, *OUT_OF_SCOPE):
            model(input_ids=torch.tensor([tokenizer(prompt)["input_ids"]]))
    handle.remove()
    fire = [x[-1] for x in inputs[:len(PROMPTS)]]
    silent = [x for xs in inputs[len(PROMPTS):] for x in xs]
    wanted = torch.tensor([1.0] * len(fire) + [-3.0] * len(silent))
    key = torch.linalg.pinv(torch.stack(fire + silent)) @ wanted
    answer_id, other_id = (tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in (answer, other))
    unembedding = model.get_output_embeddings().weight
    with torch.no_grad():
        for token in (answer_id, other_id):
            unembedding[token] *= 2 / unembedding[token].norm()
        value = unembedding[answer_id].clone()
        mlp.gate_proj.weight[NEURON] = 8 * key
        mlp.up_proj.weight[NEURON] = 8 * key
        mlp.down_proj.weight[:, NEURON] = 3 * value / value.norm()
    model.save_pretrained(directory)
    return model, tokenizer, answer_id


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    spec = make_tiny_model(tmp_path_factory.mktemp("kn") / "llama", "llama", num_hidden_layers=3)
    model, tokenizer, answer_id = plant_neuron(spec.name)
    return spec, model, tokenizer, answer_id


def probability(model, ids, token):
    with torch.no_grad():
        return float(torch.softmax(model(input_ids=ids).logits[0, -1], -1)[token])


def test_integrated_gradients_find_the_planted_neuron(planted):
    _, model, tokenizer, answer_id = planted
    layout = ModelLayout(model)
    attributions = []
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        assert probability(model, ids, answer_id) > 0.5  # the planted neuron makes the model answer c2
        scores = integrated_gradients(layout, ids, answer_id, range(3), steps=16, batch_size=5)
        assert scores.shape == (3, 64)
        assert divmod(int(scores.argmax()), 64) == (LAYER, NEURON)
        attributions.append(scores)
    assert (LAYER, NEURON) in knowledge_neurons(attributions, threshold=0.2, shared_fraction=0.5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_integrated_gradients_sum_to_the_change_from_the_zero_baseline(tiny_models, arch):
    """Completeness: a layer's attributions add up to p(target) minus p(target) with that layer's activations at
    the last token set to zero (the path's baseline). (On a random model, where p changes smoothly along the path:
    the planted neuron's saturating jump falls between the path's steps.)"""
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch].name).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch].name)
    layout = ModelLayout(model)
    ids = torch.tensor([tokenizer("the colour of s1 is")["input_ids"]])
    target = int(tokenizer("c4", add_special_tokens=False)["input_ids"][0])
    full = probability(model, ids, target)
    for layer in range(layout.num_layers):
        def zero_last(module, args):
            inner = args[0].clone()
            inner[:, -1] = 0
            return (inner,)
        handle = layout.mlp_out(layer).register_forward_pre_hook(zero_last)
        baseline = probability(model, ids, target)
        handle.remove()
        attributions = integrated_gradients(layout, ids, target, [layer], steps=32, batch_size=16)
        assert abs(full - baseline) > 1e-6
        assert float(attributions.sum()) == pytest.approx(full - baseline, rel=0.02, abs=1e-7)
        # Run after the prompt's states read once, or over the whole prompt at every step: the same attributions.
        whole = integrated_gradients(layout, ids, target, [layer], steps=32, batch_size=16, reuse_prefix_states=False)
        torch.testing.assert_close(attributions, whole, rtol=1e-4, atol=1e-9)


def test_neuron_selection_by_hand():
    first = torch.tensor([[1.0, 0.1, 0.5], [0.0, 0.3, -2.0]])   # max 1.0: above 0.2 are (0,0), (0,2), (1,1)
    second = torch.tensor([[0.9, 0.0, 0.1], [0.0, 1.0, 0.0]])   # max 1.0: above 0.2 are (0,0), (1,1)
    third = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])    # max 2.0: above 0.4 is (0,2)
    attributions = [first, second, third]
    assert knowledge_neurons(attributions, threshold=0.2, shared_fraction=0.5) == [(0, 0), (0, 2), (1, 1)]
    assert knowledge_neurons(attributions, threshold=0.2, shared_fraction=0.7) == []
    assert knowledge_neurons(attributions, threshold=0.2, shared_fraction=0.5, max_neurons=1) == [(0, 2)]
    other_fact = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.5]])  # max 5.0: above 1.0 is (1,1) only
    assert knowledge_neurons(attributions, threshold=0.2, shared_fraction=0.5, exclude=[other_fact]) == [(0, 0), (0, 2)]
    # Excluded before the cap: the cap then picks among the fact's own neurons.
    assert knowledge_neurons([second], threshold=0.2, shared_fraction=0.5, max_neurons=1, exclude=[other_fact]) == [(0, 0)]


def test_kn_edit_moves_the_planted_fact_and_nothing_else(planted):
    spec, _, _, _ = planted
    editor = KnowledgeNeurons(spec, steps=16, batch_size=8, edit_scale=3.0)
    record = EditRecord(case_id="k", prompt=PROMPTS[0], target_new="c6", target_true="c2", subject="s5",
                        paraphrases=PROMPTS[1:],
                        out_of_scope=tuple(LabeledPrompt(p, "h1") for p in OUT_OF_SCOPE))
    batch = editor.prompts.batch([record])
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    pre_in, in_labels = editor.logits(batch.in_scope)
    pre_out, out_labels = editor.logits(batch.out_of_scope)
    answered = out_labels != -100
    assert edit_success(pre_in, in_labels) == 0.0
    edited = editor.edit(batch)
    assert (LAYER, NEURON) in editor.found[0].neurons
    post_in, _ = editor.logits(batch.in_scope, edited)
    post_out, _ = editor.logits(batch.out_of_scope, edited)
    assert edit_success(post_in, in_labels) == 1.0
    assert torch.equal(pre_out.argmax(-1)[answered], post_out.argmax(-1)[answered])  # the others answer as before
    assert all(torch.equal(before[k], v) for k, v in editor.model.state_dict().items())  # functional edit


def test_refinement_leaves_out_neurons_that_other_facts_use_too(planted, monkeypatch):
    """The editor attributes the record's out-of-scope prompts for their own answers and drops their neurons."""
    spec, _, tokenizer, _ = planted
    generic = (LAYER, 40)
    asked = []

    def attributions(layout, input_ids, target_id, layers, steps, batch_size):
        prompt = tokenizer.decode(input_ids[0], skip_special_tokens=True)
        asked.append((prompt, tokenizer.decode([target_id])))
        scores = torch.zeros(len(layers), 64)
        scores[generic] = 1.0  # helps every fact's answer
        if prompt not in OUT_OF_SCOPE:
            scores[LAYER, NEURON] = 2.0  # only this fact's
        return scores

    monkeypatch.setattr("lit_edit.editors.knowledge_neurons.integrated_gradients", attributions)
    record = EditRecord(case_id="k", prompt=PROMPTS[0], target_new="c6", target_true="c2", subject="s5",
                        paraphrases=PROMPTS[1:], out_of_scope=(LabeledPrompt(OUT_OF_SCOPE[0], "h1"),),
                        hard_out_of_scope=(LabeledPrompt(OUT_OF_SCOPE[1], "h3"),))
    assert KnowledgeNeurons(spec, layers=[0, 1, 2]).find_neurons(record).neurons == [(LAYER, NEURON), generic]
    asked.clear()
    refined = KnowledgeNeurons(spec, layers=[0, 1, 2], exclusion_prompts=2)
    assert refined.find_neurons(record).neurons == [(LAYER, NEURON)]
    assert asked[2:] == [(OUT_OF_SCOPE[1], "h3"), (OUT_OF_SCOPE[0], "h1")]  # hard ones first, each its own answer


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_edit_rewrites_exactly_the_found_neurons_values(tiny_models, arch):
    """nn.Linear keeps a neuron's value in a column of the weight, GPT-2's Conv1D in a row: either way only the
    found neurons' values change, each by edit_scale * sign(activation) * (e_new - e_old)."""
    editor = KnowledgeNeurons(tiny_models[arch], steps=4, batch_size=4, threshold=0.5, max_neurons=3,
                              edit_scale=0.5)
    record = synthetic_records()[2]
    edited = editor.edit(editor.prompts.batch([record]))
    found = editor.found[0]
    assert found.neurons and len(found.neurons) <= 3
    unembedding = editor.model.get_output_embeddings().weight
    direction = 0.5 * (unembedding[found.new_token] - unembedding[found.old_token])
    named = dict(editor.model.named_parameters())
    for name, value in edited.params.items():
        change = value - named[name]
        if arch == "gpt2":
            change = change.T  # Conv1D stores (in, out)
        layer = int(name.split(".")[2])
        signs = {n: sign for (at, n), sign in zip(found.neurons, found.signs, strict=True) if at == layer}
        assert signs
        for neuron in range(change.shape[1]):
            expected = direction * signs.get(neuron, 0.0)
            torch.testing.assert_close(change[:, neuron], expected, atol=1e-6, rtol=1e-5)
    assert {int(name.split(".")[2]) for name in edited.params} == {layer for layer, _ in found.neurons}


def test_an_edit_without_knowledge_neurons_fails_and_changes_nothing(tiny_models, monkeypatch):
    import lit_edit.editors.knowledge_neurons as kn

    editor = KnowledgeNeurons(tiny_models["llama"], steps=2, batch_size=2)
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    monkeypatch.setattr(kn, "knowledge_neurons", lambda *args, **kwargs: [])
    with pytest.raises(EditFailedError, match="edit 3: no knowledge neuron passed threshold 0.2"):
        editor.edit(editor.prompts.batch([synthetic_records()[3]]))
    assert all(torch.equal(before[k], v) for k, v in editor.model.state_dict().items())
    monkeypatch.undo()
    same_start = EditRecord(case_id="s", prompt="the colour of s1 is", target_new="c2 c5", target_true="c2",
                            out_of_scope=(LabeledPrompt("the home of s9 is", "h2"),))
    with pytest.raises(EditFailedError, match="edit s: the new and the old answer begin with the same token"):
        editor.edit(editor.prompts.batch([same_start]))


def test_evaluate_py_runs_kn_with_the_shared_table(tiny_models, synthetic_splits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = load_config(CONFIG_DIR / "evaluate" / "kn.yaml")
    spec = {"name": tiny_models["gpt2"].name, "editable": tiny_models["gpt2"].editable}
    for editor in config["model"]["editors"].values():
        editor.setdefault("init_args", {})["model"] = spec
    config["model"]["editors"]["kn"]["init_args"].update(layers=None, steps=4, batch_size=4)
    config["data"].update(test=str(synthetic_splits["test"]), format="auto", limit_test=2)
    config["trainer"]["logger"] = False
    config["trainer"]["callbacks"] = []
    (tmp_path / "kn.yaml").write_text(yaml.safe_dump(config))
    evaluate_main(["--config", str(tmp_path / "kn.yaml")], default_config=None)
    assert "| editor | ES | paraphrase ES" in capsys.readouterr().out
    records = {r["editor"]: r for r in json.loads((tmp_path / "results" / "evaluate_kn.json").read_text())}
    assert records["kn"]["edits"] + records["kn"]["failed_edits"] == 2 and records["kn"]["name"] == "KN"
    assert set(records["kn"]["metrics"]) >= {"es", "dd", "efficacy", "neighbourhood_score", "edit_seconds"}


def test_layers_can_be_chosen_by_causal_tracing(tiny_models, tmp_path):
    from lit_edit.tracing import LayerSelection

    facts = tmp_path / "known.json"
    facts.write_text(json.dumps([{"prompt": "the colour of s1 is", "subject": "s1", "attribute": "c1"},
                                 {"prompt": "the home of s2 is", "subject": "s2", "attribute": "h2"}]))
    selection = LayerSelection(facts=str(facts), samples=2, neighbours=1)
    editor = KnowledgeNeurons(tiny_models["llama"], layer_selection=selection, steps=2, batch_size=2)
    chosen = selection.select(editor.model, editor.tokenizer)
    assert editor.layers == [layer for layer in (chosen - 1, chosen, chosen + 1) if 0 <= layer < 2]
    edited = editor.edit(editor.prompts.batch([synthetic_records()[1]]))
    assert {int(name.split(".")[2]) for name in edited.params} <= set(editor.layers)
