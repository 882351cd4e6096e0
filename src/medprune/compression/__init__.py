"""The machinery of ``medprune compress``: the rate search on validation (``compression.search``), the MACs floor
(``compression.floor``), the evidence behind the model card (``compression.evidence``) and the card itself
(``compression.card``). The command's runner is :mod:`medprune.runs.compress`; the one-call API is
:func:`medprune.compress`."""
