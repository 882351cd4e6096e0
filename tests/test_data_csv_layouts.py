"""FETAL_PLANES_DB and MURA v1.1 layouts on small fixtures written here (real PNG files, padded CSV values)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.data import DatasetError, DatasetNotFoundError, load_dataset
from medprune.data.csv_layouts import FETAL_PLANES

FETAL_HEADER = ["Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine", "Train"]


def _png(path: Path, seed: int, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (9, 11) if mode == "L" else (9, 11, 3)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)


def write_fetal(root: Path, drop_column: str | None = None, bad_plane_row: int | None = None) -> dict[str, str]:
    """24 patients × 3 images, planes cycling over the 6 classes; patients 1-18 train, 19-24 test.
    Returns image name → patient."""
    header = [h for h in FETAL_HEADER if h != drop_column]
    lines = [";".join(h + " " for h in header)]
    patient_of = {}
    for patient in range(1, 25):
        for k in range(3):
            name = f"Patient{patient:05d}_Plane{k}"
            plane = FETAL_PLANES[(patient + k) % 6]
            if bad_plane_row is not None and len(lines) + 1 == bad_plane_row:
                plane = "Fetal knee"
            values = {
                "Image_name": name,
                "Patient_num": str(patient),
                "Plane": plane,
                "Brain_plane": "Not A Brain",
                "Operator": "Op. 1",
                "US_Machine": "Voluson E6",
                "Train": "1" if patient <= 18 else "0",
            }
            lines.append(";".join(values[h] + "  " for h in header))
            _png(root / "Images" / f"{name}.png", seed=patient * 3 + k, mode="RGB" if k == 0 else "L")
            patient_of[name] = str(patient)
    (root / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")
    return patient_of


def test_fetal_planes(tmp_path: Path) -> None:
    patient_of = write_fetal(tmp_path)
    splits = load_dataset("fetal_planes", tmp_path, image_size=16, val_fraction=0.2)
    assert splits.class_names == FETAL_PLANES
    assert len(splits.test) == 18 and len(splits.train) + len(splits.val) == 54 and len(splits.val) > 0

    def patients(part) -> set[str]:
        return {patient_of[Path(part.source(i)).stem] for i in range(len(part))}

    assert patients(splits.train).isdisjoint(patients(splits.val)), "val must be patient-disjoint from train"
    assert patients(splits.test) == {str(p) for p in range(19, 25)}
    for i in range(len(splits.test)):  # label = Plane of the row
        name = Path(splits.test.source(i)).stem
        patient, k = int(patient_of[name]), int(name[-1])
        assert splits.class_names[splits.test.labels[i]] == FETAL_PLANES[(patient + k) % 6]
    assert splits.train[0][0].shape == (3, 16, 16)
    other = load_dataset("fetal_planes", tmp_path, image_size=16, val_fraction=0.2, seed=3)
    assert patients(other.val) != patients(splits.val) and other.fingerprint != splits.fingerprint


def test_fetal_bad_csv(tmp_path: Path) -> None:
    write_fetal(tmp_path / "a", drop_column="Plane")
    with pytest.raises(DatasetError, match=r"FETAL_PLANES_DB_data\.csv has no column 'Plane'"):
        load_dataset("fetal_planes", tmp_path / "a")
    write_fetal(tmp_path / "b", bad_plane_row=5)
    with pytest.raises(DatasetError, match=r"csv row 5: unknown Plane 'Fetal knee'"):
        load_dataset("fetal_planes", tmp_path / "b")
    write_fetal(tmp_path / "c")
    (tmp_path / "c" / "Images" / "Patient00002_Plane1.png").unlink()
    with pytest.raises(
        DatasetNotFoundError, match=r"1 image\(s\) listed in .* are missing, e.g. .*Patient00002_Plane1"
    ):
        load_dataset("fetal_planes", tmp_path / "c")
    with pytest.raises(DatasetNotFoundError, match="put FETAL_PLANES_DB_data.csv and Images/"):
        load_dataset("fetal_planes", tmp_path / "nowhere")


def write_mura(base: Path, bad_line: str | None = None) -> None:
    """Train: 20 patients (wrist and elbow studies), valid: 4 patients; outcome alternates by patient."""
    for split, patients in (("train", range(1, 21)), ("valid", range(21, 25))):
        lines = []
        for patient in patients:
            kind = "XR_WRIST" if patient % 2 else "XR_ELBOW"
            outcome = "positive" if patient % 3 == 0 else "negative"
            for image in (1, 2):
                rel = f"MURA-v1.1/{split}/{kind}/patient{patient:05d}/study1_{outcome}/image{image}.png"
                _png(base / rel, seed=patient * 2 + image, mode="RGB" if image == 1 else "L")
                lines.append(rel)
        if bad_line and split == "train":
            lines.insert(3, bad_line)
        (base / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(lines) + "\n")


def test_mura(tmp_path: Path) -> None:
    write_mura(tmp_path)
    splits = load_dataset("mura", tmp_path, image_size=12)
    assert splits.class_names == ["normal", "abnormal"]
    assert len(splits.test) == 8 and len(splits.train) + len(splits.val) == 40 and len(splits.val) >= 2

    def patients(part) -> set[str]:
        return {re.search(r"patient\d+", part.source(i)).group() for i in range(len(part))}

    assert patients(splits.train).isdisjoint(patients(splits.val))
    assert all("/valid/" in splits.test.source(i) for i in range(len(splits.test)))
    for part in (splits.train, splits.val, splits.test):
        for i in range(len(part)):
            assert part.labels[i] == int("_positive/" in part.source(i))
    assert splits.val[0][0].shape == (3, 12, 12)
    inside = load_dataset("mura", tmp_path / "MURA-v1.1", image_size=12)
    assert inside.fingerprint == splits.fingerprint
    wrist = load_dataset("mura", tmp_path, image_size=12, study_type="wrist")
    assert len(wrist.train) + len(wrist.val) == 20 and len(wrist.test) == 4
    assert all("XR_WRIST" in wrist.train.source(i) for i in range(len(wrist.train)))
    assert wrist.fingerprint != splits.fingerprint


def test_mura_errors(tmp_path: Path) -> None:
    write_mura(tmp_path / "a", bad_line="MURA-v1.1/train/XR_WRIST/patient00001/image9.png")
    with pytest.raises(DatasetError, match=r"train_image_paths\.csv line 4: .* is not a MURA image path"):
        load_dataset("mura", tmp_path / "a")
    write_mura(tmp_path / "b")
    with pytest.raises(DatasetError, match=r"unknown MURA study_type 'XR_KNEE'; valid: \['XR_ELBOW'"):
        load_dataset("mura", tmp_path / "b", study_type="XR_KNEE")
    with pytest.raises(DatasetError, match=r"lists no images of study type XR_HAND"):
        load_dataset("mura", tmp_path / "b", study_type="hand")
    with pytest.raises(DatasetNotFoundError, match="pass as --data-root the folder that contains MURA-v1.1/"):
        load_dataset("mura", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="cannot hold out 5% of 20 training images by patients"):
        load_dataset("mura", tmp_path / "b", study_type="wrist", val_fraction=0.05)
