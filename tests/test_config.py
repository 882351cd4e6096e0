"""Config building: defaults, YAML, overrides, refusal of unknown keys and values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from medprune.config import ConfigError, build_config, parse_overrides, save_config


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
