"""Evaluate editors: ``python evaluate.py`` compares unedited, FT, FT+KL and the trained MEND (configs/evaluate.yaml)."""

from lit_edit.cli import evaluate_main


def cli_main(args=None):
    return evaluate_main(args)


if __name__ == "__main__":
    cli_main()
