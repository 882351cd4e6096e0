"""Provenance helpers: checksums of models and files, package versions, strict-JSON conversion, network reachability.

Every record medprune writes beside a result (checkpoint sidecars, score files, metrics) uses these, so the same
weights always hash the same and every JSON file parses strictly (NaN and inf become ``null``).

>>> to_jsonable({"auc": float("nan"), "n": np.int64(3)})
{'auc': None, 'n': 3}
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "VERSIONED_PACKAGES",
    "model_checksum",
    "tensor_sha256",
    "file_sha256",
    "fingerprint",
    "package_versions",
    "to_jsonable",
    "offline_flag",
    "connection_error",
    "online",
]

#: Packages whose versions are recorded beside every result.
VERSIONED_PACKAGES: tuple[str, ...] = (
    "medprune",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scikit-learn",
    "zennit",
    "safetensors",
)

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (dtype and shape not included)."""
    return hashlib.sha256(_tensor_bytes(tensor)).hexdigest()


def model_checksum(model: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and values, in sorted name order); same weights, same hash.

    Used as provenance in score files: a score computed for one set of weights must not be applied to another.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def file_sha256(path: str | Path, *, cache: bool = False) -> str:
    """SHA-256 of a file's bytes.

    Args:
        path: the file.
        cache: reuse the digest computed earlier in this process for the same path, size and mtime (for large data
            files read again and again; integrity checks leave it off, since a same-size rewrite within the
            filesystem's timestamp granularity would be missed).
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if not cache or key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def fingerprint(parts: Iterable[object]) -> str:
    """SHA-256 over the ``repr`` of each part, in order (each part separated, so boundaries count)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def package_versions(packages: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` when it is not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def to_jsonable(value: Any, *, digest_tensors: bool = False) -> Any:
    """Recursively turn numpy/torch/Path values into strict-JSON types; NaN and inf become ``None``.

    Args:
        value: any nesting of dicts, lists, tuples, scalars, arrays and tensors.
        digest_tensors: write tensors with more than zero dimensions as ``{"tensor_sha256", "shape", "dtype"}``
            instead of their values (for records that describe large inputs without holding them).
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, digest_tensors=digest_tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, digest_tensors=digest_tensors) for v in value]
    if digest_tensors and isinstance(value, torch.Tensor) and value.ndim > 0:
        return {"tensor_sha256": tensor_sha256(value), "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (np.generic, torch.Tensor)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def offline_flag(names: Sequence[str] = ("MEDPRUNE_OFFLINE",)) -> str | None:
    """The first of the environment variables ``names`` set to ``"1"`` (offline mode requested), else ``None``."""
    return next((name for name in names if os.environ.get(name) == "1"), None)


def connection_error(host: str, timeout: float = 3.0) -> OSError | None:
    """``None`` when ``host:443`` accepts a TCP connection within ``timeout`` seconds, else the error."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return error
    return None


def online(host: str, timeout: float = 3.0) -> bool:
    """Whether downloads from ``host`` may be tried: offline mode is not set and the host answers."""
    return offline_flag() is None and connection_error(host, timeout) is None
