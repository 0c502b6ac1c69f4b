"""Train an editor: ``python train.py`` trains MEND on SmolLM2-135M with configs/train/mend.yaml.

Exit status: 0 when trained (or submitted); 2 for a user's mistake (a bad setting, a missing or malformed data,
config or checkpoint file: one line on stderr); 128 + the signal's number when stopped by SIGTERM or SIGUSR1 after
saving ``last.ckpt`` (run it again to resume); 1 with a traceback for anything else.
"""

from lit_edit.cli import train_main, user_errors


def cli_main(args=None):
    return train_main(args)


def main(args=None) -> None:
    with user_errors("train.py"):
        cli_main(args)


if __name__ == "__main__":
    main()
