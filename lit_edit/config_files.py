"""Config files that build on others: a top-level ``base:`` names the files this one is merged over.

    base: ../common/train.yaml          # or a list, merged in order; paths relative to this file
    trainer:
      max_steps: 600                    # this file's values win: mappings merge key by key, lists are replaced

Why: the shipped configs share one trainer block (``configs/common/``) instead of a copy each, and a user's config can
be "configs/train/mend.yaml, with these changes". Bases may have bases; a cycle or a missing file is the user's error,
named in one line. OmegaConf interpolations (``${trainer.logger.init_args.name}``) are resolved after merging, so a
base can refer to a value the including file sets. ``train.py`` and ``evaluate.py`` read configs this way
(:data:`PARSER_MODE`, registered by :mod:`lit_edit.cli`); :func:`load_config` is the same for code that reads a
config file itself. No torch here: ``lit-edit`` commands may use it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_edit.errors import ConfigurationError

if TYPE_CHECKING:
    from omegaconf import DictConfig, ListConfig

BASE_KEY = "base"
#: The jsonargparse parser mode of train.py and evaluate.py: its "omegaconf" mode, with ``base:`` in config files.
PARSER_MODE = "omegaconf_base"


def load_config(path: str | Path) -> dict[str, Any]:
    """The config ``path`` holds, its bases merged under it and interpolations resolved: what train.py parses."""
    from omegaconf import OmegaConf

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    return resolved(with_bases(OmegaConf.load(path), path), path)


def resolved(config: DictConfig | ListConfig, path: Path) -> Any:
    """``config`` as plain data, interpolations resolved; one that cannot be resolved is the user's error."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as error:  # e.g. checkpoints/${trainer.logger.init_args.name} with `logger: false`
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigurationError(f"{path}: {getattr(error, 'full_key', None) or 'a value'} cannot be read: "
                                 f"{message}") from None


def with_bases(config: DictConfig, path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """``config`` (read from ``path``) merged over its ``base:`` files, without the ``base`` key; unresolved.

    ``path`` only places the bases (relative to its folder) and names the file in errors; ``chain`` is the files that
    included this one, to refuse a cycle."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if BASE_KEY not in config:
        return config
    config = config.copy()
    bases = config.pop(BASE_KEY)
    bases = [bases] if isinstance(bases, str) else list(bases) if isinstance(bases, ListConfig) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigurationError(f"{path}: '{BASE_KEY}:' must be a file or a list of files, not {bases!r}")
    chain = (*chain, path)
    merged = []
    for base in bases:
        target = (path.parent / base).resolve()
        if target in chain:
            cycle = " -> ".join(str(link) for link in (*chain[chain.index(target):], target))
            raise ConfigurationError(f"config files include each other ({BASE_KEY}: {cycle})")
        if not target.is_file():
            raise FileNotFoundError(f"no config file {target} ({BASE_KEY}: of {path})")
        loaded = OmegaConf.load(target)
        if not isinstance(loaded, DictConfig):
            raise ConfigurationError(f"{target} ({BASE_KEY}: of {path}) is not a mapping of settings")
        merged.append(with_bases(loaded, target, chain))
    return OmegaConf.merge(*merged, config)


def load_value(value: str, path: str | None = None) -> Any:
    """jsonargparse's loader for :data:`PARSER_MODE`: as its "omegaconf" mode reads a value, except that a config
    file's (``path`` given; None for a command-line value) ``base:`` files are merged under it.

    jsonargparse reads a config file from inside the file's folder, so relative bases start there."""
    from jsonargparse import get_loader
    from omegaconf import DictConfig, OmegaConf

    plain = get_loader("yaml")(value)  # a scalar as jsonargparse's own YAML reading gives it
    if plain is None or isinstance(plain, (str, int, float, bool)):
        return plain
    config = OmegaConf.load(io.StringIO(value))
    if path is None:
        return OmegaConf.to_object(config)
    here = Path.cwd().resolve() / (path or "<config>")  # jsonargparse names a default config file by no name
    return resolved(with_bases(config, here) if isinstance(config, DictConfig) else config, here)


def register() -> None:
    """Make :data:`PARSER_MODE` a jsonargparse parser mode (idempotent)."""
    import yaml
    from jsonargparse import set_loader

    set_loader(PARSER_MODE, load_value, exceptions=(yaml.YAMLError,))
