"""Is a file PyTorch? Decided from its first bytes (and a zip's member names) without importing
torch, so that detecting a file's format imports no framework."""

from __future__ import annotations

from pathlib import Path

from convaudit.loaders.pytorch.archive import sniff_kind


def sniff(path: Path, head: bytes) -> bool:
    return sniff_kind(path, head) is not None
