"""One runner per command: a config dataclass, a ``run_*(config)`` function and a small typed result.

============  ====================================  ===================================================
module        runner                                result
============  ====================================  ===================================================
``train``     ``run_train(TrainConfig)``            :class:`~medprune.training.config.TrainResult`
``evaluate``  ``run_evaluate(EvaluateConfig)``      :class:`~medprune.runs.evaluate.EvaluateResult`
``score``     ``run_score(ScoreConfig)``            :class:`~medprune.runs.score.ScoreResult`
``prune``     ``run_prune(PruneConfig)``            :class:`~medprune.runs.prune.PruneResult`
``sweep``     ``run_sweep(SweepConfig)``            :class:`~medprune.runs.sweep.SweepResult`
``report``    ``run_report(ReportConfig)``          :class:`~medprune.runs.report.ReportResult`
``demo``      ``run_demo(DemoConfig)``              :class:`~medprune.runs.demo.DemoResult`
============  ====================================  ===================================================

Also ``import_model``: ``run_import(ImportConfig)`` -> :class:`~medprune.models.importing.ImportResult`
(``medprune import``).

Runners compose the library (data, models, train, scoring, pruning, sweep, report) and write files with their
resolved config beside them; ``medprune.cli`` only turns command lines into these configs.
"""
