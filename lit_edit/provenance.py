"""What a results file needs to be reproduced: the resolved config, seed, model and data hashes, versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from lit_edit.data.datamodule import resolve_data_path
from lit_edit.models import resolve_model_path

CACHE_FROM_BYTES = 16 << 20
PACKAGES = ("lit-edit", "torch", "lightning", "transformers", "torchmetrics", "deepspeed")


def sha256_of(paths: list[Path]) -> str:
    """One hash over the files' names and contents, in sorted order (a directory: every file below it)."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*"))
                   if f.is_file() and not f.name.endswith(".sha256"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def file_sha256(file: Path) -> str:
    """A file's SHA-256, cached beside it (``NAME.sha256``, keyed by size and modification time) where it can be
    written: hashing a model's weights costs seconds, and an evaluation records it every run."""
    stat = file.stat()
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    cache = file.with_name(f"{file.name}.sha256")
    if stat.st_size < CACHE_FROM_BYTES:
        cache = None  # quick to hash; and no cache files beside data sets or in the package
    elif cache.exists():
        cached_key, _, cached = cache.read_text().strip().rpartition(" ")
        if cached_key == key:
            return cached
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if cache is not None:
        try:
            cache.write_text(f"{key} {digest.hexdigest()}\n")
        except OSError:
            pass  # a read-only model directory: hash again next time
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_provenance(editor: Any, datamodule: Any, resolved_config: str | None) -> dict[str, Any]:
    """Seed, command, versions, the base model's and the test data's SHA-256, and the resolved config."""
    model_dir, _ = resolve_model_path(editor.model_spec)
    model_files = [f for f in Path(model_dir).iterdir() if f.suffix in (".safetensors", ".bin", ".json", ".gguf")] \
        if Path(model_dir).is_dir() else [Path(model_dir)]
    data_files = [resolve_data_path(datamodule.paths["test"])[0]] if datamodule is not None else []
    return {
        "seed": os.environ.get("PL_GLOBAL_SEED"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "versions": versions(),
        "model_sha256": sha256_of(model_files),
        "data_sha256": sha256_of(data_files) if data_files else None,
        "data_files": [str(p) for p in data_files],
        "config": resolved_config,
    }
