"""Importing trained torchvision / timm weights: end to end (import -> LRP -> prune -> remove), refusals, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from medprune.checkpoint import load_checkpoint
from medprune.cli.main import main
from medprune.data import load_dataset
from medprune.models import create_model
from medprune.models.importing import WeightsError, import_model, read_state_dict
from medprune.models.support import UnsupportedModelError, check_scorable
from medprune.pruning import coupled_groups, mask_model, masks_from_scores, remove_units
from medprune.scoring import score

SIZE = 32


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A torchvision ResNet-18 with 2 classes and its ``torch.save(model.state_dict())`` file (written once)."""
    folder = tmp_path_factory.mktemp("import")
    model = torchvision.models.resnet18(num_classes=2).eval()
    torch.save(model.state_dict(), folder / "resnet18.pt")
    return model, folder / "resnet18.pt"


def _images(data_root: Path, channels: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    test = load_dataset("pneumoniamnist", data_root, image_size=SIZE, channels=channels, augment=False).test
    pairs = [test[i] for i in range(n)]
    return torch.stack([x for x, _ in pairs]), torch.tensor([y for _, y in pairs])


@pytest.mark.parametrize("arch", ["resnet18", "timm:vit_tiny_patch16_224"])
def test_imported_model_scores_prunes_and_shrinks_exactly(arch: str, tmp_path: Path, data_root: Path) -> None:
    source = create_model(arch if ":" in arch else f"torchvision:{arch}", num_classes=2, image_size=SIZE)
    torch.save(source.state_dict(), tmp_path / "trained.pt")
    result = import_model(arch, tmp_path / "trained.pt", 2, image_size=SIZE, out_dir=tmp_path / "ckpt")
    model, meta = load_checkpoint(result.weights)
    inputs, targets = _images(data_root, meta["in_channels"])
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), source(inputs), rtol=0, atol=0)

    scores = score(model, inputs, targets, "lrp", batch_size=4)
    assert all(torch.isfinite(s).all() for s in scores.values())
    masks = masks_from_scores(scores, 0.3, couplings=coupled_groups(model) or None)
    masked, pruned = mask_model(model, masks), remove_units(model, masks)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = masked(inputs)
        torch.testing.assert_close(pruned(inputs), reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())


def test_reduce_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    class Payload:
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (os.system, (f"touch {self.marker}",))

    control, marker = tmp_path / "control", tmp_path / "marker"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)  # full unpickling runs it: the payload is live
    assert control.exists()
    torch.save({"fc.weight": torch.zeros(2, 2), "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"refusing to unpickle: it pickles 'posix\.system'"):
        import_model("resnet18", tmp_path / "evil.pt", 2, image_size=SIZE, out_dir=tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "whole.pth")
    with pytest.raises(WeightsError, match=r"torch\.nn\.modules\.container\.Sequential.*whole nn\.Module"):
        read_state_dict(tmp_path / "whole.pth")


def test_one_wrong_shape_is_named_with_both_shapes(resnet, tmp_path: Path) -> None:
    state = dict(resnet[0].state_dict())
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as error:
        import_model("resnet18", tmp_path / "bad.pt", 2, image_size=SIZE, out_dir=tmp_path / "out")
    message = str(error.value)
    assert "1 wrong shape (layer2.0.conv1.weight: file (128, 64, 1, 1) vs model (128, 64, 3, 3))" in message
    assert "missing" not in message and "unexpected" not in message


def test_missing_and_unexpected_keys_are_named(resnet, tmp_path: Path) -> None:
    state = dict(resnet[0].state_dict())
    state["extra.weight"] = state.pop("layer4.1.bn2.bias")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(WeightsError, match=r"1 missing \(layer4\.1\.bn2\.bias\); 1 unexpected \(extra\.weight\)"):
        import_model("resnet18", tmp_path / "renamed.pt", 2, image_size=SIZE, out_dir=tmp_path / "a")


def test_head_size_mismatch_says_the_file_s_class_count(resnet, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"classifier 'fc' has 2 outputs: set num_classes to 2"):
        import_model("resnet18", resnet[1], 5, image_size=SIZE, out_dir=tmp_path / "b")


def test_wrapped_and_dataparallel_prefixed_dicts_load(resnet, tmp_path: Path) -> None:
    source = resnet[0]
    wrapped = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ddp.pth")
    result = import_model("torchvision:resnet18", tmp_path / "ddp.pth", 2, image_size=SIZE, out_dir=tmp_path / "c")
    assert any("'state_dict'" in note and "epoch" in note for note in result.notes)
    assert any("'module.' prefix" in note for note in result.notes)
    model, _ = load_checkpoint(result.weights)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_grey_data_is_repeated_to_a_3_channel_first_conv(resnet, tmp_path: Path, data_root: Path) -> None:
    result = import_model("resnet18", resnet[1], 2, image_size=SIZE, in_channels=1, out_dir=tmp_path / "g")
    meta = json.loads(result.sidecar.read_text())
    assert meta["input_adapter"] == {"kind": "repeat_channels", "from": 1, "to": 3} and meta["in_channels"] == 3
    model, meta = load_checkpoint(result.weights)
    pipeline, _ = _images(data_root, meta["in_channels"], n=4)  # what evaluate / score feed the model
    mean = torch.tensor(meta["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["normalization"]["std"]).view(1, 3, 1, 1)
    raw = pipeline * std + mean  # each channel is the same grey image before normalisation
    assert pipeline.shape[1] == 3 and not torch.equal(raw[:, 0], raw[:, 0].mean().expand_as(raw[:, 0]))
    torch.testing.assert_close(raw[:, 0], raw[:, 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], rtol=0, atol=1e-5)
    with torch.no_grad():
        assert model(pipeline).shape == (4, 2)


def test_one_channel_weights_build_a_one_channel_model(tmp_path: Path) -> None:
    source = create_model("torchvision:resnet18", num_classes=2, in_channels=1, image_size=SIZE)
    torch.save(source.state_dict(), tmp_path / "grey.pt")
    result = import_model("resnet18", tmp_path / "grey.pt", 2, image_size=SIZE, out_dir=tmp_path / "o")
    assert result.in_channels == 1 and result.input_adapter is None
    with pytest.raises(WeightsError, match=r"takes 1 channel but in_channels is 3"):
        import_model("resnet18", tmp_path / "grey.pt", 2, image_size=SIZE, in_channels=3, out_dir=tmp_path / "p")


def test_unsupported_architectures_are_refused_up_front_by_name() -> None:
    efficientnet = create_model("torchvision:efficientnet_b0", num_classes=2, image_size=SIZE)
    check_scorable(efficientnet, "dlb")  # LRP and DLB have rules per operation beyond their families
    check_scorable(efficientnet, "magnitude")  # weight-based scorers work on any CNN
    densenet = create_model("torchvision:densenet121", num_classes=2, image_size=SIZE)
    scores = score(densenet, torch.zeros(1, 3, SIZE, SIZE), torch.tensor([0]), "magnitude")
    masks = masks_from_scores(scores, 0.3, scope="layer")
    with pytest.raises(UnsupportedModelError, match=r"BatchNorm2d at 'features\.denseblock1\.denselayer1\.norm1'"):
        remove_units(densenet, masks)


def test_cli_imports_and_evaluate_loads_it(
    resnet, tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture
) -> None:
    classes = load_dataset("pneumoniamnist", data_root, image_size=28).class_names
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    args = ["import", "--arch", "resnet18", "--weights", str(resnet[1]), "--num-classes", "2"]
    args += ["--image-size", str(SIZE), "--in-channels", "1", "--class-names", f"@{tmp_path / 'classes.txt'}"]
    assert main([*args, "--dataset", "pneumoniamnist", "--out", str(tmp_path / "ckpt")]) == 0
    assert "grey inputs repeated to 3 channels" in capsys.readouterr().out
    checkpoint = str(tmp_path / "ckpt" / "model.safetensors")
    evaluate = ["evaluate", checkpoint, "--data-root", str(data_root), "--max-samples", "32"]
    assert main([*evaluate, "--out", str(tmp_path / "metrics.json")]) == 0
    assert 0.0 <= json.loads((tmp_path / "metrics.json").read_text())["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--weights": "model.ckpt"}, "unsupported weights format '.ckpt'"),
        ({"--weights": "absent.pt"}, "absent.pt does not exist"),
        ({"--class-names": "a,b,c"}, "class names: 3 names ['a', 'b', 'c'] but num_classes is 2"),
        ({"--arch": "timm:not_a_model"}, "unknown timm model 'not_a_model'"),
        ({"--num-classes": "5"}, "set num_classes to 2"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    change: dict[str, str], expected: str, resnet, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "w.pt").symlink_to(resnet[1])
    (tmp_path / "model.ckpt").write_bytes(b"x")
    options = {"--arch": "resnet18", "--weights": "w.pt", "--num-classes": "2", "--image-size": str(SIZE)} | change
    options["--weights"] = str(tmp_path / options["--weights"])
    argv = ["import", *[part for pair in options.items() for part in pair], "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1
