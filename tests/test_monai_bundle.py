"""The MONAI bundle of a compressed model: MONAI's layout, a TorchScript network that loads through the bundle's own
inference config and matches the model's outputs, metadata with the provenance, checked by monai.bundle's verifiers
when monai (the optional extra) is importable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medprune.deploy.bundle import METADATA_SCHEMA, MONAI_SCHEMA, bundle_metadata, check_bundle, write_monai_bundle
from medprune.models import create_model
from medprune.pruning import export_onnx


def _card() -> dict[str, Any]:
    per_class = [{"name": n, "sensitivity": 0.9} for n in ("normal", "pneumonia")]
    return {
        "title": "resnet_small on pneumoniamnist, lrp/clustering",
        "source": {"dataset": "pneumoniamnist", "architecture": "resnet_small"},
        "test_compressed": {"accuracy": 0.9, "balanced_accuracy": 0.89, "auroc": None, "per_class": per_class},
        "totals": {"MACs removed (fraction)": 0.65},
        "choice": {"method": "lrp", "chosen rate": 0.6, "metric": "balanced_accuracy", "tolerance": 0.02},
        "base_model": {"name": "model.safetensors", "sha256": "ab" * 32},
        "relation": "pruned+quantized",
        "preprocessing": {"channels": 3, "image size": 28, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "quantization": {"format": "QDQ", "shipped": True, "why not": "", "file": "model.int8.onnx"},
    }


@pytest.fixture()
def bundle(tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28).eval()
    example = torch.randn(1, 3, 28, 28)
    onnx = export_onnx(model, tmp_path / "model.onnx", example)
    (tmp_path / "reliability.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    card_md = tmp_path / "card.md"
    card_md.write_text("# Model card\n\n![reliability diagram](reliability.png)\n")
    folder = write_monai_bundle(
        tmp_path / "bundle",
        model=model,
        example=example,
        card=_card(),
        card_md=card_md,
        onnx_files={"model.onnx": onnx},
    )
    return {"folder": folder, "model": model}


def test_layout_torchscript_and_provenance(bundle: dict[str, Any]) -> None:
    folder = bundle["folder"]
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "models/model.onnx"):
        assert (folder / name).is_file(), name
    state = torch.load(folder / "models" / "model.pt", weights_only=True)  # the specification's required weights
    assert state.keys() == bundle["model"].state_dict().keys()
    for name, tensor in bundle["model"].state_dict().items():
        torch.testing.assert_close(state[name], tensor)
    assert (folder / "docs" / "README.md").read_text().startswith("# Model card")
    assert (folder / "docs" / "reliability.png").is_file()  # the card's images travel with it
    scripted = torch.jit.load(str(folder / "models" / "model.ts"))
    x = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), bundle["model"](x))
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    assert metadata["schema"] == MONAI_SCHEMA
    assert metadata["medprune"]["relation"] == "pruned+quantized"
    assert metadata["medprune"]["base_model"]["sha256"] == "ab" * 32
    assert metadata["medprune"]["quantization"]["format"] == "QDQ"
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 3 and image["spatial_shape"] == [28, 28]
    assert image["value_range"][0] == pytest.approx(-0.485 / 0.229) and image["value_range"][1] == pytest.approx(
        (1 - 0.406) / 0.225
    )
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "pneumonia"}
    assert bundle_metadata(_card()) == metadata


def test_monai_loads_the_network_and_checks_its_shapes(bundle: dict[str, Any]) -> None:
    bundle_api = pytest.importorskip(
        "monai.bundle", reason="monai is an optional extra (pip install 'medprune[monai]')"
    )
    folder = bundle["folder"]
    bundle_api.verify_net_in_out(
        net_id="network_def",
        meta_file=str(folder / "configs" / "metadata.json"),
        config_file=str(folder / "configs" / "inference.json"),
        device="cpu",
        bundle_root=str(folder),
    )
    parser = bundle_api.ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["bundle_root"] = str(folder)
    network = parser.get_parsed_content("network_def")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(network(x), bundle["model"](x))


def test_monai_verify_metadata(bundle: dict[str, Any], tmp_path: Path) -> None:
    """``monai.bundle.verify_metadata`` against MONAI's schema: downloaded from the URL the metadata names, or read
    from MEDPRUNE_MONAI_SCHEMA (a local copy, for machines without internet)."""
    bundle_api = pytest.importorskip(
        "monai.bundle", reason="monai is an optional extra (pip install 'medprune[monai]')"
    )
    schema = Path(os.environ.get("MEDPRUNE_MONAI_SCHEMA", tmp_path / "schema.json"))
    if not schema.is_file():
        try:
            from monai.apps.utils import download_url  # noqa: PLC0415 - only to tell "offline" from "invalid"

            download_url(MONAI_SCHEMA, str(schema), progress=False)
        except Exception as error:  # offline: no schema to verify against
            pytest.skip(
                f"MONAI's metadata schema could not be fetched ({type(error).__name__}); set "
                "MEDPRUNE_MONAI_SCHEMA to a local copy of meta_schema_20220324.json"
            )
    bundle_api.verify_metadata(meta_file=str(bundle["folder"] / "configs" / "metadata.json"), filepath=str(schema))


def test_the_written_bundle_passes_the_specification_check(bundle: dict[str, Any]) -> None:
    pytest.importorskip("jsonschema", reason="jsonschema comes with the monai extra (pip install 'medprune[monai]')")
    assert check_bundle(bundle["folder"]) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.pop("copyright"), "(top level): 'copyright' is a required property"),
        (lambda m: m.pop("optional_packages_version"), "'optional_packages_version' is a required property"),
        (lambda m: m.__setitem__("version", "first"), "version: 'first' does not match"),
        (
            lambda m: m["network_data_format"]["inputs"]["image"].pop("num_channels"),
            "network_data_format/inputs/image: 'num_channels' is a required property",
        ),
        (
            lambda m: m["network_data_format"]["outputs"]["pred"].__setitem__("value_range", [0.0]),
            "network_data_format/outputs/pred/value_range",
        ),
    ],
)
def test_the_specification_check_names_what_breaks_it(bundle: dict[str, Any], change: Any, expected: str) -> None:
    """The check can fail: each broken metadata is reported with the key path, and a missing model.pt by name."""
    pytest.importorskip("jsonschema", reason="jsonschema comes with the monai extra (pip install 'medprune[monai]')")
    metadata_file = bundle["folder"] / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    change(metadata)
    metadata_file.write_text(json.dumps(metadata))
    (bundle["folder"] / "models" / "model.pt").unlink()
    problems = check_bundle(bundle["folder"])
    assert "models/model.pt is missing" in problems
    assert any(expected in problem for problem in problems), problems


def test_monai_verify_metadata_offline(bundle: dict[str, Any], tmp_path: Path) -> None:
    """``monai.bundle.verify_metadata`` itself, offline: given the specification's schema (:data:`METADATA_SCHEMA`) as
    the local copy, it passes the written metadata and rejects one without a mandatory key."""
    bundle_api = pytest.importorskip(
        "monai.bundle", reason="monai is an optional extra (pip install 'medprune[monai]')"
    )
    pytest.importorskip("jsonschema", reason="monai.bundle verify_metadata needs jsonschema")
    schema = tmp_path / "schema.json"
    schema.write_text(METADATA_SCHEMA.read_text())
    metadata_file = bundle["folder"] / "configs" / "metadata.json"
    bundle_api.verify_metadata(meta_file=str(metadata_file), filepath=str(schema))
    broken = json.loads(metadata_file.read_text())
    del broken["network_data_format"]
    metadata_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        bundle_api.verify_metadata(meta_file=str(metadata_file), filepath=str(schema))
