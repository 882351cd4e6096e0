"""Models: the architecture registry (paper models, small variants, ``torchvision:`` / ``timm:`` names), the layer
helpers the builders share, the prunable units of a model, what the method supports, and importing trained weights.

The registry's names are re-exported here (``from medprune.models import create_model``); the other modules are
imported by their own path (``medprune.models.units``, ``medprune.models.importing``), so this package stays free
of cycles (units and importing build on the registry).
"""

from medprune.models.registry import (
    ModelSpec,
    available_models,
    create_model,
    model_family,
    model_spec,
    register_model,
    resolve_external,
)

__all__ = [
    "ModelSpec",
    "available_models",
    "create_model",
    "model_family",
    "model_spec",
    "register_model",
    "resolve_external",
]
