"""One runner per command, all of one shape: ``run_<command>(config) -> <typed result>``.

============  =========================================  ====================================================
command       runner (module.function)                   result
============  =========================================  ====================================================
``import``    ``import_model.run_import(ImportConfig)``  :class:`~medprune.models.importing.ImportResult`
``train``     ``train.run_train(TrainConfig)``           :class:`~medprune.training.config.TrainResult`
``evaluate``  ``evaluate.run_evaluate(EvaluateConfig)``  :class:`~medprune.runs.evaluate.EvaluateResult`
``score``     ``score.run_score(ScoreConfig)``           :class:`~medprune.runs.score.ScoreResult`
``prune``     ``prune.run_prune(PruneConfig)``           :class:`~medprune.runs.prune.PruneResult`
``compress``  ``compress.run_compress(CompressConfig)``  :class:`~medprune.compression.config.CompressResult`
``quantize``  ``quantize.run_quantize(QuantizeConfig)``  :class:`~medprune.runs.quantize.QuantizeResult`
``sweep``     ``sweep.run_sweep(SweepConfig)``           :class:`~medprune.runs.sweep.SweepResult`
``report``    ``report.run_report(ReportConfig)``        :class:`~medprune.runs.report.ReportResult`
``demo``      ``demo.run_demo(DemoConfig)``              :class:`~medprune.runs.demo.DemoResult`
``study``     ``study.run_study(StudyConfig)``           :class:`~medprune.runs.study.StudyResult`
============  =========================================  ====================================================

(``TrainConfig`` is :class:`medprune.training.config.TrainConfig`, ``SweepConfig`` :class:`medprune.sweep.config.
SweepConfig`, ``CompressConfig`` :class:`medprune.compression.config.CompressConfig`; each runner module re-exports
its config and result, so ``from medprune.runs.<module> import <Config>, run_<command>`` is one import.)

Every runner has the same shape:

1. **Options checked before any work.** A config checks its own values when it is built (``__post_init__``, and
   :func:`medprune.config.build_config` for types and ``Literal`` values); what needs files (the checkpoint and
   its recorded model, a score file's request, the results tables) is checked by the module's
   ``check_inputs(config)``, the runner's first statement. Nothing is loaded or written before both pass; a bad
   value is a ``ValueError`` naming it (``medprune`` exits 2 with one line).
2. **One folder, one writer.** Every config of a command that writes a folder inherits
   :class:`~medprune.rundir.OutputFolder` (``out`` and ``overwrite``, meaning the same everywhere); the runner
   enters :class:`~medprune.rundir.RunDir` with them (same config resumes, another is refused unless
   ``overwrite``). ``evaluate`` writes one JSON file beside the checkpoint (``out`` is that file), not a folder.
3. **A typed result** (a dataclass) listing what was produced and where.

Runners compose the library (data, models, training, scoring, pruning, sweep, report) and write files with their
resolved config beside them; ``medprune.cli`` only turns command lines into these configs.
"""
