"""Config building: defaults, YAML, overrides, refusal of unknown keys and values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from medprune.compression.config import CompressConfig
from medprune.config import (
    ConfigError,
    build_config,
    config_to_dict,
    flat_keys,
    flat_record,
    leaf_values,
    option,
    parse_overrides,
    save_config,
)
from medprune.pruning.ranking import Ranking
from medprune.rundir import ConfigMismatchError, RunDir
from medprune.runs.demo import DemoConfig
from medprune.runs.prune import PruneConfig
from medprune.runs.score import ScoreConfig
from medprune.runs.study import StudyConfig
from medprune.scoring.request import ScoreRecipe
from medprune.study.grid import sweep_variants
from medprune.sweep.config import SweepConfig
from medprune.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class Example:
    epochs: int = 1
    lr: float = 1e-3
    scope: Literal["global", "layer"] = "global"
    rates: list[float] = field(default_factory=lambda: [0.1, 0.2])
    pretrained: bool = False
    out: str | None = None


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nscope: layer\n")
    config = build_config(Example, path, parse_overrides(["epochs=7", "rates=0.3,0.5", "pretrained=yes"]))
    assert config == Example(epochs=7, scope="layer", rates=[0.3, 0.5], pretrained=True)


def test_unknown_key_lists_valid_options():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['epoch'\].*valid options: epochs, lr"):
        build_config(Example, overrides={"epoch": 3})


def test_literal_violation_lists_allowed_values():
    with pytest.raises(ConfigError, match="scope='both' is not allowed; valid values: global, layer"):
        build_config(Example, overrides={"scope": "both"})


def test_bad_types_and_pairs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="epochs must be int"):
        build_config(Example, overrides={"epochs": "many"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(Example, tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    config = Example(epochs=3, out=None)
    path = save_config(config, tmp_path)
    assert build_config(Example, path) == config


# --- configs composed of parts: one declaration per option, three spellings of a key -------------------------------


@dataclass(frozen=True)
class Ranked:
    scope: Literal["global", "layer"] = option("global", help="the ranking scope")
    min_keep: int = option(1, help="units every layer keeps")


@dataclass(frozen=True)
class Tuned:
    lr: float = option(1e-3, help="learning rate")
    samples: int | None = option(None, help="training subset")


@dataclass
class Composed:
    epochs: int = option(1, help="epochs")
    ranking: Ranked = option(default_factory=lambda: Ranked(min_keep=2), help="the ranking")
    finetune: Tuned = option(
        default_factory=Tuned, help="the recipe", aliases={"finetune_lr": "lr", "max_train_samples": "samples"}
    )


def test_flat_nested_and_dotted_keys_set_the_same_part_leaf(tmp_path):
    flat = build_config(Composed, overrides={"scope": "layer", "finetune_lr": "0.01", "max_train_samples": 8})
    dotted = build_config(Composed, overrides={"ranking.scope": "layer", "finetune.lr": 0.01, "finetune.samples": 8})
    path = tmp_path / "c.yaml"
    path.write_text("ranking: {scope: layer}\nfinetune:\n  lr: 0.01\n  samples: 8\n")
    nested = build_config(Composed, path)
    assert flat == dotted == nested == Composed(ranking=Ranked("layer", 2), finetune=Tuned(0.01, 8))
    assert flat.ranking.min_keep == 2  # a leaf not given keeps the command's own default for the part
    assert build_config(Composed, path, {"lr": 0.5}).finetune == Tuned(0.5, 8)  # unique leaf name; later wins


def test_unknown_part_keys_and_bad_part_values_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['scop'\].*valid options: .*finetune_lr.*scope"):
        build_config(Composed, overrides={"scop": "layer"})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['ranking.scop'\]"):
        build_config(Composed, overrides={"ranking.scop": "layer"})
    with pytest.raises(ConfigError, match="scope='both' is not allowed; valid values: global, layer"):
        build_config(Composed, overrides={"scope": "both"})
    with pytest.raises(ConfigError, match="finetune_lr must be float"):  # named by the key it was given as
        build_config(Composed, overrides={"finetune_lr": "fast"})


def test_saved_config_is_nested_and_reads_back_flat_or_nested(tmp_path):
    config = build_config(Composed, overrides={"scope": "layer", "finetune_lr": 0.01})
    path = save_config(config, tmp_path)
    assert yaml.safe_load(path.read_text())["ranking"] == {"scope": "layer", "min_keep": 2}
    assert build_config(Composed, path) == config
    old = {"epochs": 1, "scope": "layer", "min_keep": 2, "finetune_lr": 0.01, "max_train_samples": None}
    assert leaf_values(Composed, old) == leaf_values(Composed, config_to_dict(config))
    assert flat_record(Composed, config_to_dict(config)) == {**old, "finetune_lr": 0.01}


#: Every committed config file and the command config it is written for.
CONFIG_FILES = {
    "breastmnist.yaml": TrainConfig,
    "pneumoniamnist.yaml": TrainConfig,
    "demo.yaml": DemoConfig,
    "results-breastmnist.yaml": SweepConfig,
    "results-pneumoniamnist.yaml": SweepConfig,
    "results-recovery.yaml": SweepConfig,
    "results-search.yaml": SweepConfig,
    "study-cpu.yaml": StudyConfig,
    "study-paper-smoke.yaml": StudyConfig,
    "study-paper.yaml": StudyConfig,
}


def test_every_config_file_loads_with_its_config_class():
    files = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert files == sorted(CONFIG_FILES), "a config file without a class here: add it to CONFIG_FILES"
    for name, cls in CONFIG_FILES.items():
        config = build_config(cls, CONFIGS / name)
        if isinstance(config, StudyConfig):  # its sweep and variants are SweepConfig keys (flat, as written)
            for variant in sweep_variants(config.sweep, config.variants).values():
                build_config(SweepConfig, overrides=variant)


def test_no_command_config_redeclares_a_ranking_or_score_recipe_option():
    """scope, normalize, min_keep, couplings, n_per_class, sign, target: declared once, in their part."""
    names = {f.name for part in (Ranking, ScoreRecipe) for f in dataclasses.fields(part)}
    for cls in (TrainConfig, SweepConfig, CompressConfig, DemoConfig, StudyConfig, ScoreConfig, PruneConfig):
        assert not names & {f.name for f in dataclasses.fields(cls)}, cls.__name__
        assert all(flat_keys(cls)[n].split(".")[0] in ("ranking", "scoring") for n in names if n in flat_keys(cls))


def test_run_folders_recorded_with_the_old_flat_keys_resume(tmp_path):
    """run.json (compress) and a legacy config.yaml (prune) written before the configs had parts: same options
    resume, a changed one is refused and named by its flat key."""
    folder = tmp_path / "compress"
    config = CompressConfig(checkpoint="m.safetensors", out=str(folder))
    flat = flat_record(CompressConfig, config_to_dict(config))
    assert {"scope", "n_per_class", "finetune_epochs", "lr", "max_train_samples"} <= set(flat)
    del flat["couplings"]  # compress had no such key: its ranking always coupled
    with RunDir(folder, "compress", flat, cosmetic=["out"]):
        (folder / "search.jsonl").write_text("")
    with RunDir(folder, "compress", config, cosmetic=["out"]) as run:
        assert run.resumed
    other = build_config(CompressConfig, overrides={"checkpoint": "m.safetensors", "out": str(folder), "lr": 0.01})
    with pytest.raises(ConfigMismatchError, match=r"lr: 0.001 -> 0.01"):
        RunDir(folder, "compress", other, cosmetic=["out"]).__enter__()

    folder = tmp_path / "prune"
    folder.mkdir()
    config = PruneConfig(checkpoint="m.safetensors", out=str(folder))
    legacy = flat_record(PruneConfig, config_to_dict(config))
    (folder / "config.yaml").write_text(yaml.safe_dump(legacy))  # what prune wrote before run.json existed
    (folder / "metrics.json").write_text("{}")
    with RunDir(folder, "prune", config, cosmetic=["out"]) as run:
        assert run.resumed
