"""Config files that build on others: a top-level ``base:`` names the files this one is merged over.

    base: ../common/train.yaml          # or a list, merged in order; paths relative to this file
    trainer:
      max_steps: 600                    # this file's values win: mappings merge key by key, lists are replaced

Why: the shipped configs share one trainer block (``configs/common/``) instead of a copy each, and a user's config can
be "configs/train/mend.yaml, with these changes". Bases may have bases; a cycle or a missing file is the user's error,
named in one line. OmegaConf interpolations (``${trainer.logger.init_args.name}``) are resolved after merging, so a
base can refer to a value the including file, or the command line, sets. ``train.py`` and ``evaluate.py`` read configs this way
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
#: The jsonargparse parser mode of train.py and evaluate.py: its "omegaconf+" mode (interpolations resolved after
#: every source is merged), its loader replaced by :func:`load_value`, which also merges ``base:`` files.
PARSER_MODE = "omegaconf+"


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
        raise unreadable(error, str(path)) from None


def unreadable(error: Exception, where: str) -> ConfigurationError:
    """An OmegaConf ``error`` (an interpolation that cannot be resolved) as the user's one-line error, naming
    ``where`` (a config file, or the command line's merged config) and the value."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ConfigurationError(f"{where}: {getattr(error, 'full_key', None) or 'a value'} cannot be read: {message}")


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
    """jsonargparse's loader for :data:`PARSER_MODE`: a config file's (``path`` given; None for a command-line value)
    ``base:`` files merged under it, interpolations left for the parser to resolve once every file and command-line
    value is in (its "omegaconf+" mode); so ``--trainer.logger.init_args.name exp`` also moves a base file's
    ``checkpoints/${trainer.logger.init_args.name}``.

    jsonargparse reads a config file from inside the file's folder, so relative bases start there."""
    from jsonargparse import get_loader
    from omegaconf import DictConfig, OmegaConf

    plain = get_loader("yaml")(value)  # a scalar as jsonargparse's own YAML reading gives it
    if plain is None or isinstance(plain, (str, int, float, bool)):
        return plain
    config = OmegaConf.load(io.StringIO(value))
    if path is not None and isinstance(config, DictConfig):
        config = with_bases(config, Path.cwd().resolve() / (path or "<config>"))  # a default config file has no name
    return OmegaConf.to_container(config, resolve=False)


def register() -> None:
    """Make :data:`PARSER_MODE` a jsonargparse parser mode (idempotent)."""
    import yaml
    from jsonargparse import set_loader

    set_loader(PARSER_MODE, load_value, exceptions=(yaml.YAMLError,))
