"""DL-Backtrace (DLB): the ``dlb`` scorer, a native, vectorised re-implementation of ``dl-backtrace==0.1.24``.

Modules, in the order relevance flows through them:

- :mod:`.scorer`: :func:`dlb_relevance` (dispatch on the architecture) and the registered ``dlb`` scorer;
- :mod:`.cnn` / :mod:`.vit`: the backward walks over torchvision VGG / ResNet and timm ViTs;
- :mod:`.graph`: rules per operation over the traced graph of every other CNN (refuses, naming it, an operation
  without one);
- :mod:`.walk`: what both walks share (recording layer inputs/outputs, collecting unit relevance);
- :mod:`.rules`: one vectorised relevance rule per layer type.
"""

from medprune.scoring.dlb.scorer import STARTS, dlb_relevance, dlb_scorer

__all__ = ["STARTS", "dlb_relevance", "dlb_scorer"]
