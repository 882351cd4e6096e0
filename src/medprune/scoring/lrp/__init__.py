"""Layer-wise Relevance Propagation (LRP): the ``lrp`` scorer and input heatmaps.

Modules, in the order relevance flows through them:

- :mod:`.scorer`: :func:`relevance_maps` (dispatch on the model family), the registered ``lrp`` scorer and
  :func:`input_relevance`;
- :mod:`.cnn`: torchvision VGG / ResNet through a zennit composite;
- :mod:`.vit`: timm ViTs through medprune's CP-LRP / AttnLRP forward pass;
- :mod:`.rules`: composites by name and the zennit rules behind them;
- :mod:`.lean_hooks`: leaner versions of zennit's rule hooks (same relevance, less work);
- :mod:`.targets`: the target-class check shared by both paths.
"""

from medprune.scoring.lrp.rules import CNN_COMPOSITES, VIT_COMPOSITES
from medprune.scoring.lrp.scorer import LRP_OPTIONS, input_relevance, lrp_scores, relevance_maps

__all__ = ["CNN_COMPOSITES", "LRP_OPTIONS", "VIT_COMPOSITES", "input_relevance", "lrp_scores", "relevance_maps"]
