"""The machinery of ``medprune compress``: the rate search on validation (``compression.search``), the MACs floor
(``compression.floor``), the evidence behind the model card (``compression.evidence``), the card's record
(``compression.card``, what ``card.json`` holds) and its page for a person (``compression.card_page``: ``card.md``;
``compression.card_html``: ``card.html``). The command's runner is :mod:`medprune.runs.compress`; the one-call API is
:func:`medprune.compress`."""
