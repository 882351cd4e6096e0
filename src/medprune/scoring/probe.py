"""Method option values checked before any data is loaded.

Option names are checked by :func:`~medprune.scoring.registry.validate_method_request`; their values (``ig.steps=-3``,
``lrp.composite=bogus``, ``dlb.total=-1``) only by the scorer itself. :func:`check_option_values` runs each method with
the given options once, on one blank image through a small model of the checkpoint's family (milliseconds), so a bad
value is refused in seconds instead of after the dataset has loaded.

>>> check_option_values({"ig": {"steps": -3}}, {"model": {"name": "resnet_small"}, "in_channels": 3})
Traceback (most recent call last):
...
ValueError: method option(s) for 'ig' (steps=-3): steps must be an int >= 1, got -3
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from medprune.models import available_models, create_model, model_spec
from medprune.models.units import unit_groups
from medprune.scoring.registry import score

logger = logging.getLogger(__name__)

__all__ = ["PROBE_MODELS", "check_option_values"]

#: The small model each family is probed with.
PROBE_MODELS: dict[str, str] = {"vgg": "vgg_small", "resnet": "resnet_small", "vit": "vit_small"}
_SIDE = 32


def check_option_values(
    method_options: Mapping[str, Mapping[str, Any] | None],
    meta: Mapping[str, Any] | None = None,
    *,
    option_word: str = "method option(s)",
) -> None:
    """Run every method that has options once with them; a refusal becomes a ``ValueError`` naming method and values.

    Args:
        method_options: ``{method: {option: value}}`` (methods without options are not run).
        meta: the checkpoint's sidecar (:func:`medprune.checkpoint.read_meta`): its model family and input channels
            choose the probe model. ``None``: a ResNet on 3 channels. Models of other families are not probed (their
            scorer checks the values when it runs).
        option_word: how the caller's user spells the options (``--option``), used in messages.

    Raises:
        ValueError: a scorer refused an option value (the scorer's own message, after the method and values).
    """
    given = {method: dict(options) for method, options in method_options.items() if options}
    if not given:
        return
    name = str(((meta or {}).get("model") or {}).get("name", "resnet_small"))
    family = model_spec(name).family if name in available_models() else None
    if family not in PROBE_MODELS:
        logger.debug("no probe model for %s; option values are checked when scoring", name)
        return
    channels = int((meta or {}).get("in_channels", 3))
    model = create_model(PROBE_MODELS[family], num_classes=2, in_channels=channels, image_size=_SIDE).eval()
    groups = unit_groups(model)
    image, label = torch.zeros(1, channels, _SIDE, _SIDE), torch.zeros(1, dtype=torch.long)
    for method, options in given.items():
        try:
            score(model, image, label, method, groups=groups, **options)
        except (ValueError, TypeError) as error:
            values = ", ".join(f"{key}={value!r}" for key, value in options.items())
            raise ValueError(f"{option_word} for {method!r} ({values}): {error}") from None
