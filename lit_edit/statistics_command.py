"""``lit-edit key-statistics``: estimate ROME/MEMIT's C = E[kkᵀ] for some layers ahead of time, in one pass.

    lit-edit key-statistics --layers 3 4 5 6 7                 # configs/evaluate_rome.yaml's layers and settings

An editor estimates C for its own layers the first time it edits; two editors over overlapping layers (ROME at 5,
MEMIT over 3–7) would then sample and read the text twice. This command reads every layer's keys from the same
passages at once, resumably, into the cache the editors read (``checkpoints/key_statistics/``), so it can run as a
job of its own (``sbatch``) before an evaluation. The settings must be the editors' own for the cache to be theirs.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from lit_edit.model_names import DEFAULT_MODEL

#: :class:`~lit_edit.mechanics.key_statistics.KeyStatisticsSpec`'s defaults (the editors' own), written out so that
#: ``--help`` imports no torch; tests/test_cli_speed.py keeps them equal.
SPEC_DEFAULTS = SimpleNamespace(corpus=None, samples=1000, tokens=64, batch_size=64, seed=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, nargs="+", required=True, help="blocks whose MLP keys to summarise")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or directory (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", help="torch dtype of the weights (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--corpus", default=SPEC_DEFAULTS.corpus,
                        help="text file, one passage per line (default: text the model samples itself)")
    parser.add_argument("--samples", type=int, default=SPEC_DEFAULTS.samples, help="passages (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=SPEC_DEFAULTS.tokens, help="tokens per passage (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=SPEC_DEFAULTS.batch_size,
                        help="passages per batch; part of the cache key (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SPEC_DEFAULTS.seed, help="seed of sampled passages (default: %(default)s)")


def main(args: argparse.Namespace) -> list[str]:
    """Estimates (or finds cached) C for every requested layer; prints the cache files, with how many keys each
    summarises and a hash of its sums (to check that another machine's estimate is the same), and returns them."""
    from lit_edit.mechanics.key_statistics import KeyStatisticsSpec, cache_path, estimate_key_moments, read_moment_file
    from lit_edit.mechanics.model_layout import ModelLayout
    from lit_edit.models import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec(name=args.model, dtype=args.dtype)
    model = load_model(spec).to(args.device).eval()
    tokenizer = load_tokenizer(spec)
    layout = ModelLayout(model)
    statistics = KeyStatisticsSpec(corpus=args.corpus, samples=args.samples, tokens=args.tokens,
                                   batch_size=args.batch_size, seed=args.seed)
    estimate_key_moments(model, tokenizer, layout, sorted(set(args.layers)), statistics)
    paths = [cache_path(model, layout.mlp_out_name(layer), statistics) for layer in sorted(set(args.layers))]
    for path in paths:
        moment = read_moment_file(path)["moment"]  # weights_only: a planted cache file runs nothing
        print(f"{path}  keys={moment.count}  sum-sha256={moment.digest()}")
    return [str(path) for path in paths]
