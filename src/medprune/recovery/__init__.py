"""Recovery after masking: BatchNorm recalibration (``recovery.recalibration``) and fine-tuning with the pruned units
held at exactly zero, optionally distilled from the unpruned model (``recovery.finetune``)."""
