"""Evaluate editors: ``python evaluate.py`` compares unedited, FT, FT+KL and the trained MEND
(configs/evaluate/default.yaml).

Exit status: 0 when every batch was evaluated and the results written; 2 for a user's mistake (a bad setting, a
missing or malformed data, config or checkpoint file, or another run writing the same ``--model.output``: one line
on stderr); 143 (128 + 15) when stopped by SIGTERM at an editor's batch boundary, with the per-batch log kept (run
the same command again to resume); 1 with a traceback for anything else.
"""

from lit_edit.cli import evaluate_main, user_errors


def cli_main(args=None):
    return evaluate_main(args)


def main(args=None) -> None:
    with user_errors("evaluate.py"):
        cli_main(args)


if __name__ == "__main__":
    main()
