"""CounterFact's probability comparisons and EasyEdit's token accuracy, against hand computations."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import RELATIONS, SUBJECTS, synthetic_records, true_object
from test_protocol import evaluate

from lit_edit.data.records import EditDataError, EditRecord, LabeledPrompt
from lit_edit.editors import EditedModel, FineTune
from lit_edit.paper_scores import (
    Consistency,
    Fluency,
    TargetPreference,
    TokenAccuracy,
    example_nll,
    inverse_document_frequencies,
    ngram_entropy,
    preference,
    tfidf_cosine,
    token_accuracy,
)


def logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits [1, positions, vocab] whose softmax is the given distributions."""
    return torch.tensor(probabilities).log().unsqueeze(0)


def test_counterfact_scores_on_a_hand_built_example():
    # Vocabulary: 0 = "Paris" (true), 1 = "Rome" (new), 2 = other. One position predicts the object.
    edit_prompt = logits_for([[0.2, 0.7, 0.1]])       # after the edit: Rome 0.7 > Paris 0.2  -> efficacy 1
    paraphrases = [logits_for([[0.5, 0.4, 0.1]]),     # Paris still wins                      -> 0
                   logits_for([[0.3, 0.6, 0.1]])]     # Rome wins                             -> 1
    neighbours = [logits_for([[0.6, 0.3, 0.1]]),      # neighbour keeps Paris                 -> 1
                  logits_for([[0.1, 0.8, 0.1]])]      # neighbour now says Rome: bled over     -> 0
    true, new = torch.tensor([[0]]), torch.tensor([[1]])

    def nll(logits, label):
        return example_nll(logits, label)

    assert nll(edit_prompt, new).item() == pytest.approx(-math.log(0.7), rel=1e-5)
    efficacy = preference(nll(edit_prompt, new), nll(edit_prompt, true))
    paraphrase = preference(torch.cat([nll(p, new) for p in paraphrases]), torch.cat([nll(p, true) for p in paraphrases]))
    neighbourhood = preference(torch.cat([nll(n, true) for n in neighbours]), torch.cat([nll(n, new) for n in neighbours]))
    assert (efficacy.item(), paraphrase.item(), neighbourhood.item()) == (1.0, 0.5, 0.5)

    metric = TargetPreference()  # the metric over two updates equals the function over everything at once
    metric.update(nll(paraphrases[0], new), nll(paraphrases[0], true))
    metric.update(nll(paraphrases[1], new), nll(paraphrases[1], true))
    assert metric.compute() == paraphrase


def test_mean_nll_per_token_decides_for_multi_token_targets():
    # A two-token target at probabilities 0.9 and 0.1: its likelihood is the mean of the two NLLs, as in ROME.
    two = example_nll(logits_for([[0.9, 0.1], [0.1, 0.9]]), torch.tensor([[0, 0]]))
    assert two.item() == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2, rel=1e-5)
    assert example_nll(torch.zeros(1, 2, 3), torch.tensor([[-100, -100]])).isnan().all()  # no target: not a row


def test_token_accuracy_is_easyedits_per_token_mean_and_es_is_all_or_nothing():
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]],     # predicts 1, 0, 0
                           [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])    # predicts 0, 0, 1
    labels = torch.tensor([[1, 1, -100], [-100, 0, 1]])             # row 0: 1 of 2 right; row 1: 2 of 2 right
    assert token_accuracy(logits, labels).item() == pytest.approx(0.75)
    metric = TokenAccuracy()
    metric.update(logits[:1], labels[:1])
    metric.update(logits[1:], labels[1:])
    assert metric.compute().item() == pytest.approx(0.75)


def with_counterfact_neighbours(record: EditRecord) -> EditRecord:
    """The record plus CounterFact-style neighbours: same relation, other subjects with the same true object."""
    template = RELATIONS[record.relation][0]
    same = [s for s in SUBJECTS if s != record.subject and true_object(s, record.relation) == record.target_true]
    return replace(record, hard_out_of_scope=(*record.hard_out_of_scope,
                                              *(LabeledPrompt(template.format(s), record.target_true) for s in same)))


def test_an_edit_wins_efficacy_while_unedited_neighbours_keep_their_object(knowing_gpt2, tmp_path, monkeypatch):
    records = [with_counterfact_neighbours(r) for r in synthetic_records()[:4]]
    assert all(len(r.hard_out_of_scope) > 2 for r in records)
    with monkeypatch.context() as patched:  # the same run with an edit that changes nothing
        patched.setattr(FineTune, "edit", lambda self, batch, on=None: EditedModel(self.model, self.kind, {}))
        unedited, _ = evaluate(knowing_gpt2, records, tmp_path / "unedited" / "r.json")
    assert unedited[0]["metrics"]["efficacy"] == 0.0  # the model knows the true objects ...
    assert unedited[0]["metrics"]["neighbourhood_score"] == 1.0  # ... its neighbours' too
    results, _ = evaluate(knowing_gpt2, records, tmp_path / "edited" / "r.json")
    metrics = results[0]["metrics"]
    assert metrics["efficacy"] == 1.0 and metrics["paraphrase_score"] >= metrics["paraphrase_es"]
    assert metrics["token_accuracy"] >= metrics["es"]
    assert 0.0 <= metrics["neighbourhood_score"] <= 1.0  # FT on the MLP may bleed into neighbours


def test_fluency_is_romes_weighted_ngram_entropy():
    assert ngram_entropy("Picasso Picasso Picasso Picasso Picasso") == 0.0  # the degenerate edit's signature
    text = "the cat sat on the mat ."
    bigrams, trigrams = 6, 5  # all distinct: entropies log2(6) and log2(5) bits
    assert ngram_entropy(text) == pytest.approx((2 / 3 * math.log2(bigrams) + 4 / 3 * math.log2(trigrams)) / 2)
    metric = Fluency()
    metric.update([text, "Picasso Picasso Picasso"])
    assert metric.compute().item() == pytest.approx(ngram_entropy(text) / 2)


def test_consistency_is_romes_tfidf_cosine_on_a_hand_computation():
    idf = inverse_document_frequencies(["paris france", "Paris city", "berlin city"])
    common, rare = math.log(4 / 3) + 1, math.log(4 / 2) + 1  # in 2 of 3 documents; in 1 of 3 (smoothed)
    assert idf == pytest.approx({"paris": common, "city": common, "france": rare, "berlin": rare})
    # "Paris Paris France is a": counts paris 2, france 1 ("is" and "a" have no IDF: never seen, or too short).
    expected = (2 * common * common) / (math.sqrt((2 * common) ** 2 + rare ** 2) * math.sqrt(2) * common)
    assert tfidf_cosine("Paris Paris France is a", "paris city", idf) == pytest.approx(expected)
    assert tfidf_cosine("nothing known", "paris city", idf) == 0.0
    metric = Consistency()
    metric.update(["Paris Paris France is a", "berlin"], ["paris city", "berlin city"], idf)
    assert metric.compute().item() == pytest.approx((expected + rare / math.sqrt(rare ** 2 + common ** 2)) / 2)


def test_an_evaluation_that_generates_reports_fluency(knowing_gpt2, tmp_path):
    from lightning.pytorch import Trainer

    from lit_edit.data.datamodule import EditDataModule
    from lit_edit.data.readers import write_edit_records
    from lit_edit.editors import FineTune
    from lit_edit.suite import EditorSuite

    records = synthetic_records()[:2]
    data_file = write_edit_records(records, tmp_path / "edits.json")
    references = tmp_path / "references.json"  # texts about the first record's new target only
    references.write_text(json.dumps({records[0].target_new.upper(): [f"{records[0].target_new} is where it is"]}))
    quiet = EditorSuite({"ft": FineTune(knowing_gpt2, steps=1)}, output=str(tmp_path / "quiet.json"))
    talking = EditorSuite({"ft": FineTune(knowing_gpt2, steps=1)}, output=str(tmp_path / "r.json"), fluency_tokens=6)
    for suite in (quiet, talking):
        data = EditDataModule(test=str(data_file), model=knowing_gpt2, references=str(references))
        Trainer(accelerator="cpu", logger=False, inference_mode=False, enable_progress_bar=False,
                enable_model_summary=False).test(suite, datamodule=data, verbose=False)
    assert math.isnan(quiet.results[0]["metrics"]["fluency"])  # not generated, not reported as 0
    assert math.isnan(quiet.results[0]["metrics"]["consistency"])
    assert 0.0 <= talking.results[0]["metrics"]["fluency"] <= 2 * math.log2(6)
    assert 0.0 <= talking.results[0]["metrics"]["consistency"] <= 1.0
    assert "| consistency |" in (tmp_path / "r.md").read_text() and "consistency" not in (tmp_path / "quiet.md").read_text()
    references.write_text(json.dumps({"Paris": []}))
    with pytest.raises(EditDataError, match=r"references.json: record 'Paris'.*non-empty list of texts"):
        EditDataModule(test=str(data_file), model=knowing_gpt2, references=str(references)).records("test")
