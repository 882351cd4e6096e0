"""Layouts listed by CSV files: FETAL_PLANES_DB (``fetal_planes``) and MURA v1.1 (``mura``).

Both come with an official train/test split; the validation split is carved from train **patient-disjoint**
(:func:`~medprune.data.splitting.group_split`), so no patient is in both train and val by construction. Every listed
image must exist (checked at load time, cheaply, without decoding); a corrupt file fails at first read naming its path.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from medprune.data.base import FileStore
from medprune.data.errors import DatasetError, DatasetNotFoundError
from medprune.data.registry import LoadOptions, RawDataset, RawSplit, register_layout
from medprune.data.splitting import group_split
from medprune.provenance import file_sha256, fingerprint

logger = logging.getLogger(__name__)

FETAL_CSV = "FETAL_PLANES_DB_data.csv"
FETAL_COLUMNS = ("Image_name", "Patient_num", "Plane", "Train")
FETAL_PLANES = ["Fetal abdomen", "Fetal brain", "Fetal femur", "Fetal thorax", "Maternal cervix", "Other"]
MURA_DIR = "MURA-v1.1"
MURA_CSVS = {"train": "train_image_paths.csv", "test": "valid_image_paths.csv"}
MURA_STUDY_TYPES = ["XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST"]
MURA_CLASSES = ["normal", "abnormal"]
_MURA_PATH = re.compile(r"(?:^|/)(XR_[A-Z]+)/(patient[^/]+)/(study[^/]*_(positive|negative))/[^/]+$")


def _check_files(paths: list[Path], listed_in: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise DatasetNotFoundError(
            f"{len(missing)} image(s) listed in {listed_in} are missing, e.g. {shown}: put the images there"
        )


def _official_split(
    paths: list[Path],
    labels: np.ndarray,
    patients: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray],
    options: LoadOptions,
    names: list[str],
    digest: str,
    what: str,
) -> RawDataset:
    """The official ``(train, test)`` index ``parts`` of dataset ``what`` (class ``names``, fingerprint ``digest``),
    with a patient-grouped validation split carved out of the train part and a note on patients in both parts."""
    official_train, test = parts
    keep, held = group_split(labels[official_train], patients[official_train], options.val_fraction, options.seed)
    store = FileStore(paths)
    return RawDataset(
        RawSplit(store, labels, official_train[keep]),
        RawSplit(store, labels, official_train[held]),
        RawSplit(store, labels, test),
        class_names=list(names),
        fingerprint=digest,
        notes=_leak_note(patients, official_train, test, what),
    )


def _leak_note(patients: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, what: str) -> list[str]:
    shared = np.intersect1d(patients[train_idx], patients[test_idx])
    if len(shared):
        return [f"the official {what} split shares {len(shared)} patient(s) between train and test, e.g. {shared[0]}"]
    return []


# ----------------------------------------------------------------------------------------------------- FETAL_PLANES_DB


def _read_fetal_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except UnicodeDecodeError:  # not UTF-8: every byte is valid latin-1
        with open(path, newline="", encoding="latin-1") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    if not rows:
        raise DatasetError(f"{path} is empty; expected the header {';'.join(FETAL_COLUMNS)};...")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in FETAL_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path} has no column {missing[0]!r} (columns: {header}; all missing: {missing})")
    records = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in row):
            continue
        if len(row) < len(header):
            raise DatasetError(f"{path} row {line}: {len(row)} values for {len(header)} columns: {';'.join(row)}")
        record = {h: v.strip() for h, v in zip(header, row)}
        record["_line"] = str(line)
        records.append(record)
    if not records:
        raise DatasetError(f"{path} lists no images")
    return records


@register_layout("fetal_planes")
def load_fetal_planes(root: Path | None, options: LoadOptions) -> RawDataset:
    """FETAL_PLANES_DB: label = ``Plane`` (6 classes), ``Train`` 1/0 official split, val carved by patient."""
    candidates = [] if root is None else [root, root / "fetal_planes", root / "FETAL_PLANES_ZENODO"]
    folder = next((c for c in candidates if (c / FETAL_CSV).is_file()), None)
    if folder is None:
        where = " or ".join(str(c / FETAL_CSV) for c in candidates) or "(no root given)"
        raise DatasetNotFoundError(
            f"FETAL_PLANES_DB not found: looked for {where}; put {FETAL_CSV} and Images/<Image_name>.png in one "
            "folder and pass it as --data-root (or make it $MEDPRUNE_DATA/fetal_planes)"
        )
    csv_path = folder / FETAL_CSV
    canonical = {p.lower(): k for k, p in enumerate(FETAL_PLANES)}
    paths, labels, patients, is_train = [], [], [], []
    for record in _read_fetal_csv(csv_path):
        where = f"{csv_path} row {record['_line']}"
        plane = record["Plane"].lower()
        if plane not in canonical:
            raise DatasetError(f"{where}: unknown Plane {record['Plane']!r}; expected one of {FETAL_PLANES}")
        if record["Train"] not in ("0", "1"):
            raise DatasetError(f"{where}: Train must be 1 or 0, got {record['Train']!r}")
        if not record["Image_name"] or not record["Patient_num"]:
            raise DatasetError(f"{where}: empty Image_name or Patient_num")
        paths.append(folder / "Images" / f"{record['Image_name']}.png")
        labels.append(canonical[plane])
        patients.append(record["Patient_num"])
        is_train.append(record["Train"] == "1")
    _check_files(paths, csv_path)
    labels_arr, patients_arr = np.asarray(labels, dtype=np.int64), np.asarray(patients)
    train_mask = np.asarray(is_train)
    official_train, test = np.flatnonzero(train_mask), np.flatnonzero(~train_mask)
    if len(official_train) == 0 or len(test) == 0:
        raise DatasetError(f"{csv_path}: the Train column must have both 1 (train) and 0 (test) rows")
    digest = fingerprint(
        ["fetal_planes", file_sha256(csv_path, cache=True), ("patient-val", options.val_fraction, options.seed)]
    )
    parts = (official_train, test)
    return _official_split(paths, labels_arr, patients_arr, parts, options, FETAL_PLANES, digest, "FETAL_PLANES_DB")


# ---------------------------------------------------------------------------------------------------------------- MURA


def _study_type(value: str | None) -> str | None:
    if value is None:
        return None
    key = value.strip().upper()
    key = key if key.startswith("XR_") else f"XR_{key}"
    if key not in MURA_STUDY_TYPES:
        raise DatasetError(f"unknown MURA study_type {value!r}; valid: {MURA_STUDY_TYPES} (or without 'XR_')")
    return key


def _read_mura_csv(csv_path: Path, base: Path, study: str | None) -> tuple[list[Path], list[int], list[str]]:
    paths, labels, patients = [], [], []
    with open(csv_path, encoding="utf-8-sig") as handle:
        for line, raw in enumerate(handle, start=1):
            entry = raw.strip().strip(",").strip()
            if not entry:
                continue
            match = _MURA_PATH.search(entry.replace("\\", "/"))
            if match is None:
                raise DatasetError(
                    f"{csv_path} line {line}: {entry!r} is not a MURA image path like "
                    f"{MURA_DIR}/train/XR_WRIST/patient00001/study1_positive/image1.png"
                )
            kind, patient, _, outcome = match.groups()
            if (study is not None and kind != study) or entry.rsplit("/", 1)[-1].startswith("._"):
                continue  # other study type, or a macOS '._' metadata file
            paths.append(base / entry)
            labels.append(1 if outcome == "positive" else 0)
            patients.append(patient)
    return paths, labels, patients


@register_layout("mura")
def load_mura(root: Path | None, options: LoadOptions) -> RawDataset:
    """MURA v1.1: labels from the study folder (``positive`` = abnormal); valid = test; val carved by patient."""
    candidates = [] if root is None else [root, root.parent, root / "mura"]
    base = next((c for c in candidates if (c / MURA_DIR / MURA_CSVS["train"]).is_file()), None)
    if base is None:
        where = " or ".join(str(c / MURA_DIR / MURA_CSVS["train"]) for c in candidates) or "(no root given)"
        raise DatasetNotFoundError(
            f"MURA v1.1 not found: looked for {where}; pass as --data-root the folder that contains {MURA_DIR}/ "
            f"(with {', '.join(MURA_CSVS.values())} and the train/ valid/ image folders)"
        )
    study = _study_type(options.study_type)
    all_paths, all_labels, all_patients, split_of = [], [], [], []
    for split, name in MURA_CSVS.items():
        csv_path = base / MURA_DIR / name
        if not csv_path.is_file():
            raise DatasetNotFoundError(f"MURA list {csv_path} is missing: put {name} in {base / MURA_DIR}")
        paths, labels, patients = _read_mura_csv(csv_path, base, study)
        if not paths:
            raise DatasetError(f"{csv_path} lists no images" + (f" of study type {study}" if study else ""))
        _check_files(paths, csv_path)
        all_paths += paths
        all_labels += labels
        all_patients += patients
        split_of += [split] * len(paths)
    labels_arr, patients_arr = np.asarray(all_labels, dtype=np.int64), np.asarray(all_patients)
    split_arr = np.asarray(split_of)
    official_train, test = np.flatnonzero(split_arr == "train"), np.flatnonzero(split_arr == "test")
    hashes = [file_sha256(base / MURA_DIR / name, cache=True) for name in MURA_CSVS.values()]
    digest = fingerprint(["mura", hashes, study, ("patient-val", options.val_fraction, options.seed)])
    parts = (official_train, test)
    return _official_split(all_paths, labels_arr, patients_arr, parts, options, MURA_CLASSES, digest, "MURA")
