"""``run_import(config)``: a trained torchvision / timm classifier's weights -> a medprune checkpoint.

The options of ``medprune import`` as a config (so the command takes ``--config FILE``, flags and ``--set`` like every
other one); the work is :func:`medprune.models.importing.import_model`.

>>> # result = run_import(ImportConfig(arch="resnet18", weights="resnet18.pt", num_classes=2))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medprune.config import ConfigError, option
from medprune.models.importing import (
    WEIGHT_SUFFIXES,
    ImportResult,
    WeightsError,
    class_names_from_dataset,
    import_model,
    read_class_names,
)
from medprune.rundir import OutputFolder, RunDir, output_folder
from medprune.training.config import MAX_IMAGE_SIZE
from medprune.training.memory import check_batch_memory

__all__ = ["ImportConfig", "check_inputs", "run_import"]


#: The most classes an imported model may have (``--no-limits`` lifts it): far beyond any medical dataset, and the
#: memory check before the import refuses a classifier head that does not fit in any case.
MAX_CLASSES = 100_000


@dataclass
class ImportConfig(OutputFolder):
    """Options of ``medprune import``."""

    out: str = output_folder("imported")
    arch: str = option(
        "",
        help="architecture: a torchvision classification model (resnet18, torchvision:efficientnet_b0, ...) or "
        "timm:<name> (timm:vit_tiny_patch16_224, ...); docs/support.md lists what each stage supports",
        required=True,
    )
    weights: str = option(
        "",
        help="the weights file; torch files are read with weights_only=True (state dicts only: pickled objects such as "
        "a whole nn.Module are refused)",
        choices=[f"*{s}" for s in WEIGHT_SUFFIXES],
        required=True,
    )
    num_classes: int = option(0, help="number of classes (outputs), >= 2", required=True, limit=MAX_CLASSES)
    image_size: int = option(224, help="input side in pixels the data is resized to", limit=MAX_IMAGE_SIZE)
    in_channels: int | None = option(
        None,
        help="channels of your images: 1 (grey) or 3 (RGB); grey images with a 3-channel first conv are repeated to 3 "
        "channels",
        choices=(1, 3),
        shown_default="the channels of the weights' first conv",
    )
    class_names: str | None = option(
        None,
        help="class names, comma-separated (normal,pneumonia) or @FILE with one name per line",
        shown_default="0, 1, ...",
    )
    dataset: str | None = option(
        None,
        help="dataset name recorded in the checkpoint for evaluate/score/sweep; its class names are checked against "
        "--class-names (and taken from it when those are not given)",
        shown_default="none recorded",
    )
    data_root: str | None = option(
        None, help="folder of the recorded dataset (read for its class names)", shown_default="the default data folder"
    )

    def __post_init__(self) -> None:
        missing = [name for name in ("arch", "weights", "num_classes") if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"missing required option(s) {missing}; e.g. --arch resnet18 --weights w.pt --num-classes 2"
            )
        if self.in_channels not in (None, 1, 3):
            raise ConfigError(f"in_channels={self.in_channels!r} is not allowed; valid values: 1, 3")
        if self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {self.image_size!r}")


def check_inputs(config: ImportConfig) -> None:
    """The checks of ``config`` that read files (its values are checked when it is built), before the folder is
    taken: the weights file's format and presence, the class names. The weights' content is checked when
    :func:`~medprune.models.importing.import_model` reads them, before it writes anything.

    Raises:
        WeightsError: an unsupported weights format or bad class names. FileNotFoundError: a missing file.
    """
    weights = Path(config.weights)
    suffix = weights.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(
            f"{weights}: unsupported weights format {suffix or '(none)'!r}; use {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    if config.dataset is not None:  # later commands refuse class names that differ from the dataset's
        class_names_from_dataset(config.class_names, config.num_classes, config.dataset, config.data_root)
    elif config.class_names is not None:
        read_class_names(config.class_names, config.num_classes)
    sizes = f"--num-classes {config.num_classes} --image-size {config.image_size}"
    check_batch_memory(config.arch, config.num_classes, config.image_size, config.in_channels or 3, what=sizes)


def run_import(config: ImportConfig) -> ImportResult:
    """Import ``config.weights`` as a checkpoint in ``config.out`` (:func:`medprune.models.importing.import_model`).

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir` (one writer;
    a folder holding another run's files is refused unless ``config.overwrite``, which moves them aside).
    """
    check_inputs(config)
    with RunDir(config.out, "import", config, cosmetic=("out",), overwrite=config.overwrite):
        return _import(config)


def _import(config: ImportConfig) -> ImportResult:
    return import_model(
        config.arch,
        config.weights,
        config.num_classes,
        image_size=config.image_size,
        in_channels=config.in_channels,
        class_names=config.class_names,
        out_dir=config.out,
        dataset=config.dataset,
        data_root=config.data_root,
    )
