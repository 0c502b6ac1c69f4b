"""Hashes stored with results: correct, cached for large files, and never stale."""

from __future__ import annotations

import hashlib
import os

from lit_edit import provenance


def test_file_hash_is_cached_beside_large_files_and_redone_when_they_change(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "CACHE_FROM_BYTES", 0)  # every file counts as large here
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first weights")
    assert provenance.file_sha256(weights) == hashlib.sha256(b"first weights").hexdigest()
    assert (tmp_path / "model.safetensors.sha256").exists()
    weights.write_bytes(b"other weights")
    os.utime(weights, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert provenance.file_sha256(weights) == hashlib.sha256(b"other weights").hexdigest()
    # The directory hash covers names and contents and ignores the cache files.
    first = provenance.sha256_of([tmp_path])
    (tmp_path / "config.json").write_text("{}")
    assert provenance.sha256_of([tmp_path]) != first


def test_small_files_leave_no_cache_behind(tmp_path):
    data = tmp_path / "edits.json"
    data.write_text("[]")
    provenance.file_sha256(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edits.json"]
