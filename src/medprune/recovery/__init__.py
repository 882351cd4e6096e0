"""Recovery after masking: the fine-tuning recipe (``recovery.recipe.FinetuneRecipe``), the one BatchNorm
recalibration and its image picker (``recovery.recalibration``), and ``recovery.finetune.recover``, the one recovery
the sweep and compress call (fine-tuning with the pruned units held at exactly zero, optionally distilled from the
unpruned model, then recalibration). Import-light: import the submodules."""
