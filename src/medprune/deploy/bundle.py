"""What a shipped model needs beside its weights: the preprocessing an input must get (from the checkpoint's
sidecar), and a MONAI bundle of it.

>>> preprocessing({"model": {"image_size": 28, "in_channels": 3},
...                "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})["input"]
'float32 tensor (N, 3, 28, 28), named images'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["preprocessing"]


def preprocessing(meta: Mapping[str, Any], transform: Any = None) -> dict[str, Any]:
    """The preprocessing of the model a checkpoint sidecar (``model.json``) describes, as the card states it.

    Args:
        meta: the sidecar (``model.image_size`` / ``model.in_channels`` or their top-level copies, and
            ``normalization`` with ``mean`` and ``std``).
        transform: the evaluation transform the data was read with (an
            :class:`~medprune.data.transforms.ImageTransform`): what a sidecar without ``normalization`` (one
            written outside ``medprune train``) leaves out is read from it.
    """
    model = meta.get("model") or {}
    size = model.get("image_size", meta.get("image_size", getattr(transform, "image_size", None)))
    channels = model.get("in_channels", meta.get("in_channels", getattr(transform, "channels", None)))
    normalization = meta.get("normalization") or {
        "mean": list(getattr(transform, "mean", []) or []) or None,
        "std": list(getattr(transform, "std", []) or []) or None,
    }
    steps = [
        f"resize to {size} x {size} pixels (antialiased) when the image has another size",
        "scale uint8 pixel values to [0, 1] (divide by 255)",
        f"normalise each channel: (x - mean) / std with mean {normalization.get('mean')} and std "
        f"{normalization.get('std')}",
    ]
    if channels == 3:
        steps.append("a grey image is normalised with these statistics and its one channel repeated to 3")
    elif channels == 1:
        steps.insert(0, "a colour image is converted to grey first")
    return {
        "input": f"float32 tensor (N, {channels}, {size}, {size}), named images",
        "output": "logits (N, classes), named logits; softmax gives class probabilities",
        "image size": size,
        "channels": channels,
        "mean": normalization.get("mean"),
        "std": normalization.get("std"),
        "steps": steps,
    }
