"""Train an editor: ``python train.py`` trains MEND on SmolLM2-135M with configs/mend.yaml."""

from lit_edit.cli import train_main


def cli_main(args=None):
    return train_main(args)


if __name__ == "__main__":
    cli_main()
