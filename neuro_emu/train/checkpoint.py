"""Atomic checkpoint and JSON writes: a run killed mid-save keeps its previous file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A file that is not a readable neuro-emu checkpoint (truncated, corrupt, or another's)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> Path:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync it, then rename
    it over ``path`` (a rename within one folder is atomic on POSIX). The file gets the mode a
    plain ``open`` would give it (mkstemp's is 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save(state)`` to ``path`` atomically."""
    return _atomic_write(Path(path), lambda file: torch.save(state, file))


def save_json(data: object, path: str | Path) -> Path:
    """``data`` as indented JSON at ``path``, atomically."""
    text = (json.dumps(data, indent=2) + "\n").encode()
    return _atomic_write(Path(path), lambda file: file.write(text))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable checkpoint (truncated or not one of ours).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - pickle/zip errors of every kind mean "corrupt"
        raise CheckpointError(f"{path} is not a readable checkpoint ({error})") from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(
            f"{path} is not a neuro-emu checkpoint (no 'model' and 'config' keys)"
        )
    return state
