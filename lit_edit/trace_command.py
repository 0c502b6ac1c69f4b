"""``lit-edit trace``: causal tracing of facts on a model; heatmaps as PNG, every number as JSON.

    lit-edit trace --prompt "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower"
    lit-edit trace --facts shared:rome_known/known_1000.json#0:10 --samples 3 --out results/trace

For each fact, ``OUT/trace_I.png`` shows the answer's probability with each hidden state, MLP output and attention
output restored (by token and layer), and ``OUT/trace_I.json`` holds those numbers. ``OUT/summary.json`` (plotted
in ``OUT/summary.png``) averages the indirect effects at the subject's last token and at the prompt's last token over
the facts and names the layer whose MLP matters most there (what :class:`lit_edit.tracing.LayerSelection` picks).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lit_edit.errors import UserInputError
from lit_edit.model_names import DEFAULT_MODEL

if TYPE_CHECKING:  # torch, transformers and matplotlib are imported when tracing, not for --help
    from lit_edit.tracing import CausalTrace, Fact, Tracer

#: :data:`lit_edit.tracing.KINDS`, written out so that ``--help`` imports no torch; tests/test_cli_speed.py keeps
#: them equal.
KINDS = ("hidden", "mlp", "attention")


def _at_least(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[least, most]``, so a bad value is refused before the model loads."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least or (most is not None and value > most):
            bound = f"at least {least}" if most is None else f"between {least} and {most}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (a noise std or scale of 0 corrupts nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to trace (one prompt, or a file of known facts)")
    what.add_argument("--prompt", help="a prompt that names the subject")
    what.add_argument("--subject", help="the subject, spelled as in the prompt")
    what.add_argument("--answer", help="the answer to trace (default: the model's own greedy next token)")
    what.add_argument("--facts", help="ROME known-facts file (prompt, subject, attribute), e.g. "
                                      "shared:rome_known/known_1000.json#0:10")
    what.add_argument("--known-only", action="store_true",
                      help="with --facts: trace only facts whose attribute's first token is the model's prediction")
    what.add_argument("--limit", type=_at_least(1), help="with --facts: trace at most this many (after --known-only)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or directory (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", help="torch dtype of the weights (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--samples", type=_at_least(1), default=10, help="noise samples per fact (default: %(default)s)")
    parser.add_argument("--window", type=_at_least(1), default=10,
                        help="MLP/attention outputs restored together around each layer (ROME: 10)")
    parser.add_argument("--noise-scale", type=_positive_float, default=3.0,
                        help="noise std in units of the subjects' token-embedding std (ROME: 3)")
    parser.add_argument("--noise", type=_positive_float, help="absolute noise std (overrides --noise-scale)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="states to restore")
    parser.add_argument("--seed", type=_at_least(0, 2**63 - 1), default=0)
    parser.add_argument("--out", default="results/trace", help="output directory (default: %(default)s)")
    for name, help_text in (("blocks", "dotted path of the block list"), ("mlp", "MLP module inside a block"),
                            ("attention", "attention module inside a block")):
        parser.add_argument(f"--layout-{name}", help=f"{help_text} (default: found by structure)")


def summarize(traces: list[CausalTrace], kinds: list[str]) -> dict[str, object]:
    """Mean indirect effect per layer at the subject's last token and at the last token, and the MLP layer with
    the largest effect at the subject's last token."""
    import torch

    summary: dict[str, object] = {"facts": len(traces)}
    for kind in kinds:
        at_subject = torch.stack([t.indirect_effect(kind)[t.last_subject_token] for t in traces]).mean(0)  # type: ignore[arg-type]
        at_last = torch.stack([t.indirect_effect(kind)[-1] for t in traces]).mean(0)  # type: ignore[arg-type]
        summary[f"{kind}_effect_at_last_subject_token"] = at_subject.tolist()
        summary[f"{kind}_effect_at_last_token"] = at_last.tolist()
        if kind == "mlp":
            summary["selected_layer"] = int(at_subject.argmax())
    summary["mean_clean_prob"] = sum(t.clean_prob for t in traces) / len(traces)
    summary["mean_corrupted_prob"] = sum(t.corrupted_prob for t in traces) / len(traces)
    return summary


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from lit_edit.data.datamodule import context_length_of
    from lit_edit.mechanics.model_layout import LayoutSpec, ModelLayout
    from lit_edit.mechanics.subject_tokens import SubjectNotFoundError, subject_token_span
    from lit_edit.models import ModelSpec, load_model, load_tokenizer
    from lit_edit.tracing import Fact, Tracer, embedding_noise_std, plot_summary, read_known_facts, write_trace

    if bool(args.facts) == bool(args.prompt):
        parser.error("give either --prompt and --subject, or --facts")
    if args.prompt and not args.subject:
        parser.error("--prompt needs --subject (the subject's tokens are the ones corrupted)")
    misplaced = [flag for flag, given in (("--known-only", args.known_only), ("--limit", args.limit is not None))
                 if given and not args.facts] + (["--answer"] if args.answer and args.facts else [])
    if misplaced:
        parser.error(f"{', '.join(misplaced)}: {'only with --facts' if not args.facts else 'only with --prompt'}")
    try:
        spec = ModelSpec(name=args.model, dtype=args.dtype)
        tokenizer = load_tokenizer(spec)
        limit = context_length_of(spec)
        facts = read_known_facts(args.facts, "--facts") if args.facts else [Fact(args.prompt, args.subject, args.answer)]
        for fact in facts:  # every fact is checked before any work is done
            subject_token_span(tokenizer, fact.prompt, fact.subject)
            length = len(tokenizer(fact.prompt)["input_ids"])
            if limit is not None and length > limit:
                raise ValueError(f"prompt {fact.prompt[:40]!r} is {length} tokens, more than the model's context of "
                                 f"{limit}; shorten it")
    except (SubjectNotFoundError, UserInputError, FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    model = load_model(spec).to(args.device)
    layout = ModelLayout(model, LayoutSpec(blocks=args.layout_blocks, mlp=args.layout_mlp,
                                           attention=args.layout_attention))
    tracer = Tracer(model, tokenizer, layout, args.seed)
    if args.facts and args.known_only:
        facts = [f for f in facts if _predicts(tracer, f)]
        print(f"{len(facts)} of the facts are predicted by the model (--known-only)")
        if not facts:
            parser.error("the model predicts none of the facts' attributes")
    facts = facts[:args.limit] if args.limit else facts
    noise = args.noise if args.noise is not None else args.noise_scale * embedding_noise_std(
        model, tokenizer, [f.subject for f in facts])
    out = Path(args.out)
    traces = []
    for index, fact in enumerate(facts):
        trace = tracer.trace(fact, noise, args.samples, args.window, args.kinds)
        png, json_path = write_trace(trace, out / f"trace_{index}")
        traces.append(trace)
        print(f"{fact.prompt!r} -> {trace.answer!r}: clean p {trace.clean_prob:.3f}, corrupted p "
              f"{trace.corrupted_prob:.3f}; wrote {png} and {json_path}")
    summary = summarize(traces, args.kinds)
    summary.update(noise=noise, samples=args.samples, window=args.window, model=args.model)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_summary(summary, out / "summary.png")
    if "selected_layer" in summary:
        print(f"largest mean MLP effect at the subject's last token: layer {summary['selected_layer']}")
    print(f"wrote {out / 'summary.json'}")


def _predicts(tracer: Tracer, fact: Fact) -> bool:
    """Whether the model's greedy next token is the first token of the fact's answer."""
    import torch

    from lit_edit.tracing import answer_token

    ids = torch.tensor([tracer.tokenizer(fact.prompt)["input_ids"]], device=tracer.device)
    with torch.no_grad():
        logits = tracer.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, -1]
    return fact.answer is not None and int(logits.argmax()) == answer_token(tracer.tokenizer, fact.answer)

