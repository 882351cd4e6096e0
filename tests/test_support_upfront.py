"""Issue 25, step 2: support is checked up front. A model a command cannot handle is refused, with one line naming
the layer, before any data is read or any output folder is taken; ``import`` checks class names against the dataset
it records (and takes them from it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import medprune.checkpoint.with_data as with_data
import medprune.runs.compress as compress_module
import medprune.runs.score as score_module
import medprune.sweep.inputs as sweep_inputs
from medprune.checkpoint import read_meta, save_checkpoint
from medprune.models import create_model
from medprune.models.importing import WeightsError, import_model, read_class_names
from medprune.models.registry import register_model
from medprune.models.support import UnsupportedModelError
from medprune.runs.compress import compress
from medprune.runs.score import ScoreConfig, run_score
from medprune.runs.sweep import run_sweep
from medprune.scoring.registry import available_scorers
from medprune.sweep.config import SweepConfig

_NAME = "test_upfront_mha"


class _WithMultiheadAttention(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.attn(tokens, tokens, tokens)[0].mean(1))


try:
    register_model(_NAME, family="other", min_image_size=8)(
        lambda num_classes, in_channels, image_size, pretrained: _WithMultiheadAttention(num_classes)
    )
except ValueError:  # registered by an earlier import of this module
    pass


@pytest.fixture()
def refused_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A checkpoint no scorer supports (its heads hide in nn.MultiheadAttention); reading any data fails the test."""
    model = create_model(_NAME, num_classes=2, image_size=16)
    meta = {"class_names": ["normal", "pneumonia"], "dataset": {"name": "pneumoniamnist"}}
    path = str(save_checkpoint(tmp_path / "train" / "model", model, meta))

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the support check")

    for module in (with_data, compress_module, score_module, sweep_inputs):
        monkeypatch.setattr(module, "load_with_splits", no_data)
    return path


def _one_line_naming_the_layer(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert "\n" not in message and "MultiheadAttention at 'attn'" in message


def test_compress_refuses_before_data(refused_checkpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "compress"
    with pytest.raises(UnsupportedModelError) as error:
        compress(refused_checkpoint, out=str(out), method="magnitude", rates=[0.1])
    _one_line_naming_the_layer(error)
    assert not out.exists()


def test_score_refuses_before_data(refused_checkpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "scores"
    with pytest.raises(UnsupportedModelError) as error:
        run_score(ScoreConfig(checkpoint=refused_checkpoint, methods=["magnitude"], out=str(out)))
    _one_line_naming_the_layer(error)
    assert not out.exists()


def test_sweep_refuses_before_data(refused_checkpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    config = SweepConfig(checkpoints=[refused_checkpoint], methods=["magnitude"], rates=[0.1], out=str(out))
    with pytest.raises(UnsupportedModelError) as error:
        run_sweep(config)
    _one_line_naming_the_layer(error)
    assert not out.exists()


def test_score_with_every_method_leaves_out_those_without_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = create_model("resnet_small", num_classes=2, image_size=16)
    path = str(save_checkpoint(tmp_path / "m" / "model", model, {"class_names": ["a", "b"]}))
    reason = "lrp has no rule for Widget at 'w'"
    monkeypatch.setattr(score_module, "scorer_blocker", lambda model, method: reason if method == "lrp" else None)
    methods = score_module.check_inputs(ScoreConfig(checkpoint=path, out=str(tmp_path / "s")))
    assert "lrp" not in methods and methods == [m for m in available_scorers() if m != "lrp"]
    assert f"left out lrp: {reason}" in caplog.text
    # named explicitly, the method is refused, not left out
    monkeypatch.setattr(score_module, "check_scorable", lambda model, method: (_ for _ in ()).throw(ValueError(method)))
    with pytest.raises(ValueError, match="dlb"):
        score_module.check_inputs(ScoreConfig(checkpoint=path, methods=["dlb"], out=str(tmp_path / "s")))


# ------------------------------------------------------------------------------------------------ import class names


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "resnet.pt"
    torch.save(create_model("torchvision:resnet18", num_classes=2, image_size=32).state_dict(), path)
    return path


def test_import_takes_class_names_from_the_dataset(weights: Path, tmp_path: Path, data_root: Path) -> None:
    result = import_model(
        "resnet18", weights, 2, image_size=32, out_dir=tmp_path / "a", dataset="breastmnist", data_root=str(data_root)
    )
    assert read_meta(result.weights)["class_names"] == ["malignant", "normal, benign"]


def test_import_refuses_class_names_the_dataset_does_not_have(weights: Path, tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(WeightsError, match=r"differ from those of dataset 'breastmnist'") as error:
        import_model(
            "resnet18", weights, 2, out_dir=out, class_names="benign,malignant", dataset="breastmnist",
            data_root=str(data_root),
        )  # fmt: skip
    assert "\n" not in str(error.value)
    assert not (out / "model.json").exists()
    with pytest.raises(WeightsError, match="has 2 classes"):
        import_model("resnet18", weights, 3, out_dir=out, dataset="breastmnist", data_root=str(data_root))
    # the dataset's own names, a comma inside one, given inline as a JSON list
    result = import_model(
        "resnet18", weights, 2, image_size=32, out_dir=out, class_names='["malignant", "normal, benign"]',
        dataset="breastmnist", data_root=str(data_root),
    )  # fmt: skip
    assert read_meta(result.weights)["class_names"] == ["malignant", "normal, benign"]


@pytest.mark.parametrize("bad", ['["a", 1]', "[not json", '["a"'])
def test_json_class_names_are_checked(bad: str) -> None:
    with pytest.raises(WeightsError, match="JSON"):
        read_class_names(bad, 2)


def test_import_without_the_dataset_files_warns_and_keeps_the_given_names(
    weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = import_model(
        "resnet18", weights, 2, image_size=32, out_dir=tmp_path / "c", class_names="x,y", dataset="breastmnist",
        data_root=str(empty),
    )  # fmt: skip
    assert read_meta(result.weights)["class_names"] == ["x", "y"]
    assert "class names not checked against dataset 'breastmnist'" in caplog.text
