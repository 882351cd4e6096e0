"""Checkpoints without pickle: safetensors weights plus a JSON sidecar (``checkpoint.io``), and a checkpoint opened
together with the data splits it was trained on (``checkpoint.with_data``).

The file functions are re-exported here (``from medprune.checkpoint import load_checkpoint``).
"""

from medprune.checkpoint.io import FORMAT, checkpoint_paths, load_checkpoint, read_meta, save_checkpoint

__all__ = ["FORMAT", "checkpoint_paths", "load_checkpoint", "read_meta", "save_checkpoint"]
