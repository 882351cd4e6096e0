"""The study: the paper's grid (checkpoints x sweeps), its resumable bookkeeping and the claims it answers.

- :mod:`~medprune.study.grid`: grid points, training recipes and their keys;
- :mod:`~medprune.study.manifest`: ``study.json``, finished tasks written atomically;
- :mod:`~medprune.study.progress`: one progress display with a grid-wide ETA;
- :mod:`~medprune.study.results`: the sweeps' rows, tagged and merged into one table;
- :mod:`~medprune.study.claims`, :mod:`~medprune.study.claims_report`: each paper claim, its statistic and verdict.

The runner is :func:`medprune.runs.study.run_study`.
"""
