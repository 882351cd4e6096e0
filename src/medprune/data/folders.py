"""Folder-per-class layouts: ``folder`` (any class names), ``kvasir`` (KVASIR v2) and ``cpn`` (COVID/NORMAL/PNEUMONIA).

``<root>/<class>/<image>`` (images may sit in sub-folders of a class folder), or ``<root>/{train,val,test}/<class>/``
when the dataset comes split (``val`` may be missing, or spelt ``valid``/``validation``: it is then carved from train,
stratified). Without given splits a seeded stratified train/val/test split is made. Hidden entries (``.name``) are
ignored. A folder layout has no list of what belongs to it, so files without an image extension
(:data:`~medprune.data.base.IMAGE_EXTENSIONS`: a ``README.txt``, ``Thumbs.db``, a ``.csv`` of labels) are skipped;
their number and first names are a note of the dataset, logged as a warning. A file *with* an image extension that
does not decode is refused naming the file (:func:`medprune.data.validate.validate_splits`, before the first epoch).
``kvasir`` and ``cpn`` check the class folders against the published class names,
case-insensitively, and report the canonical names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medprune.data.base import IMAGE_EXTENSIONS, FileStore
from medprune.data.errors import DatasetError, DatasetNotFoundError
from medprune.data.registry import LoadOptions, RawDataset, RawSplit, register_layout
from medprune.data.splitting import check_fraction, stratified_split
from medprune.provenance import fingerprint

logger = logging.getLogger(__name__)

KVASIR_CLASSES = [
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
]
CPN_CLASSES = ["COVID", "NORMAL", "PNEUMONIA"]
_SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """Image files under ``folder`` (sorted, hidden entries left out); other files are added to ``skipped``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            if filename.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / filename)
            elif skipped is not None:
                skipped.append(Path(dirpath) / filename)
    return found


def _skipped_note(folder: Path, skipped: list[Path]) -> list[str]:
    """The dataset note on the files without an image extension skipped under ``folder`` (none: no note)."""
    if not skipped:
        return []
    shown = ", ".join(p.relative_to(folder).as_posix() for p in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    note = (
        f"{len(skipped)} file(s) without an image extension skipped in {folder}: {shown}{more} "
        f"(images are {', '.join(IMAGE_EXTENSIONS)})"
    )
    return [note]  # logged as a warning by medprune.data.load_dataset, as every note


def _class_folders(folder: Path, expected: list[str] | None, what: str) -> dict[str, Path]:
    """Canonical class name → class folder, checked against ``expected`` (case-insensitive) when given."""
    dirs = _subdirs(folder)
    if not dirs:
        raise DatasetNotFoundError(
            f"no class folders in {folder}: put the {what} images in one folder per class, {folder}/<class>/*.png"
        )
    if expected is None:
        return {d.name: d for d in dirs}
    canonical = {name.lower(): name for name in expected}
    found = {d.name.lower(): d for d in dirs}
    missing = [canonical[k] for k in canonical if k not in found]
    unexpected = [found[k].name for k in found if k not in canonical]
    if missing or unexpected:
        raise DatasetError(
            f"{folder} does not have the {what} class folders: missing {missing}, unexpected {unexpected}; "
            f"expected one folder per class: {expected}"
        )
    return {canonical[k]: found[k] for k in sorted(canonical)}


def _scan(
    folder: Path,
    class_names: list[str] | None,
    expected: list[str] | None,
    what: str,
    skipped: list[Path] | None = None,
) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image paths, labels) of one folder of class folders; an empty class folder is an error. Files
    without an image extension are added to ``skipped``."""
    classes = _class_folders(folder, expected, what)
    if class_names is not None and sorted(classes) != sorted(class_names):
        raise DatasetError(f"{folder} has classes {sorted(classes)} but the train split has {class_names}")
    names = class_names if class_names is not None else sorted(classes)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        images = _images_in(classes[name], skipped)
        if not images:
            raise DatasetError(
                f"class folder {classes[name]} (class {name!r}) has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        paths += images
        labels += [label] * len(images)
    return names, paths, np.asarray(labels, dtype=np.int64)


def _given_splits(folder: Path) -> dict[str, Path]:
    by_name = {d.name.lower(): d for d in _subdirs(folder)}
    found = {}
    for split, spellings in _SPLIT_NAMES.items():
        for spelling in spellings:
            if spelling in by_name:
                found[split] = by_name[spelling]
                break
    return found if "train" in found and "test" in found else {}


def _listing(paths: list[Path], base: Path) -> list[tuple[str, int]]:
    return [(p.relative_to(base).as_posix(), p.stat().st_size) for p in paths]


def load_class_folders(folder: Path, options: LoadOptions, expected: list[str] | None, what: str) -> RawDataset:
    """Splits of a folder-per-class dataset (see the module docstring)."""
    val_fraction = check_fraction("val_fraction", options.val_fraction)
    given = _given_splits(folder)
    skipped: list[Path] = []
    if given:
        names, train_paths, train_labels = _scan(given["train"], None, expected, what, skipped)
        if "val" in given:
            _, val_paths, val_labels = _scan(given["val"], names, expected, what, skipped)
            how: tuple = ("given-splits",)
        else:
            keep, held, _ = stratified_split(train_labels, val_fraction, 0.0, options.seed)
            val_paths, val_labels = [train_paths[i] for i in held], train_labels[held]
            train_paths, train_labels = [train_paths[i] for i in keep], train_labels[keep]
            how = ("given-train-test", val_fraction, options.seed)
        _, test_paths, test_labels = _scan(given["test"], names, expected, what, skipped)
        triples = [(train_paths, train_labels), (val_paths, val_labels), (test_paths, test_labels)]
        listing = [(_listing(paths, folder), labels.tolist()) for paths, labels in triples]
        digest = fingerprint([what, names, how, listing])
        train, val, test = (RawSplit(FileStore(paths), labels) for paths, labels in triples)
        notes = _skipped_note(folder, skipped)
        return RawDataset(train, val, test, class_names=names, fingerprint=digest, notes=notes)
    names, paths, labels = _scan(folder, None, expected, what, skipped)
    train, val, test = stratified_split(labels, val_fraction, options.test_fraction, options.seed)
    store = FileStore(paths)
    digest = fingerprint(
        [what, names, ("stratified", val_fraction, options.test_fraction, options.seed), _listing(paths, folder)]
    )
    notes = _skipped_note(folder, skipped)
    for split_name, idx in (("val", val), ("test", test)):
        absent = [names[k] for k in range(len(names)) if not np.any(labels[idx] == k)]
        if absent and len(idx):
            notes.append(f"classes {absent} have too few images to appear in {split_name}")
    return RawDataset(
        RawSplit(store, labels, train),
        RawSplit(store, labels, val),
        RawSplit(store, labels, test),
        class_names=names,
        fingerprint=digest,
        notes=notes,
    )


def _locate(root: Path | None, name: str, what: str, looks_right: Callable[[Path], bool]) -> Path:
    if root is None:
        raise DatasetNotFoundError(
            f"no data folder for {what}: pass --data-root (the folder holding one folder per class; data_root= from "
            f"Python), or set MEDPRUNE_DATA so that $MEDPRUNE_DATA/{name} is that folder"
        )
    for candidate in (root, root / name):
        if candidate.is_dir() and looks_right(candidate):
            return candidate
    if not root.is_dir():
        raise DatasetNotFoundError(f"{what} folder {root} does not exist: put one folder per class of images there")
    return root


def _matches(expected: list[str] | None) -> Callable[[Path], bool]:
    def looks_right(folder: Path) -> bool:
        names = {d.name.lower() for d in _subdirs(folder)}
        if _given_splits(folder):
            return True
        return bool(names) if expected is None else {e.lower() for e in expected} <= names

    return looks_right


@register_layout("folder")
def load_folder(root: Path | None, options: LoadOptions) -> RawDataset:
    """Any folder-per-class dataset; class names are the folder names, sorted."""
    folder = _locate(root, "folder", "the folder dataset", lambda f: True)
    return load_class_folders(folder, options, None, "folder")


@register_layout("kvasir")
def load_kvasir(root: Path | None, options: LoadOptions) -> RawDataset:
    """KVASIR v2: 8 class folders of JPEGs (names checked case-insensitively)."""
    folder = _locate(root, "kvasir", "KVASIR v2", _matches(KVASIR_CLASSES))
    return load_class_folders(folder, options, KVASIR_CLASSES, "KVASIR v2")


@register_layout("cpn")
def load_cpn(root: Path | None, options: LoadOptions) -> RawDataset:
    """CPN, Covid19-Pneumonia-Normal chest X-rays: class folders COVID, NORMAL, PNEUMONIA (any case)."""
    folder = _locate(root, "cpn", "CPN (COVID/NORMAL/PNEUMONIA)", _matches(CPN_CLASSES))
    return load_class_folders(folder, options, CPN_CLASSES, "CPN")
