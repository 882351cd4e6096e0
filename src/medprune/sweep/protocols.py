"""Named pruning protocols: the settings that decide how scores become masks and what happens after masking.

A :class:`Setting` is the part of a curve's key that is not the criterion: ``scope``, ``normalize``, ``sign`` and
``recalibrate``. Two settings have names:

- ``paper``: the paper's protocol (global ranking, no normalisation, signed relevance, no recalibration; residual
  writers pruned independently, as in the paper);
- ``default``: medprune's product default (see :data:`PROTOCOLS`): a global ranking made width-fair by dividing each
  layer's scores by their mean magnitude, magnitudes of relevance summed over samples, and BatchNorm statistics
  re-estimated on 512 training images after masking. Chosen on validation by ``scripts/choose_default.py`` from the
  setting search (``configs/results-search.yaml``, PneumoniaMNIST and BreastMNIST, 2 x 3 seeds): the admissible
  setting (no control collapses) with the largest mean lossless rate of LRP, DLB and IG; docs/results.md §3.

>>> PROTOCOLS["paper"].as_dict()
{'scope': 'global', 'normalize': 'none', 'sign': 'signed', 'recalibrate': 'none'}
>>> protocol_name({"scope": "global", "normalize": "none", "sign": "signed", "recalibrate": "none"})
'paper'

A row pruned with coupled residual writers (``couplings`` true) is not the paper's protocol: its name says so
(``paper+coupled``), since a coupled set is ranked by the sum of its members' scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from medprune.config import ConfigError
from medprune.options import (
    RECALIBRATIONS,
    SIGNS,
    Recalibrate,
    Sign,
    check_option,
)
from medprune.pruning.ranking import Ranking
from medprune.sweep.table import recovery_label

__all__ = ["PROTOCOLS", "SETTING_FIELDS", "Setting", "is_coupled", "protocol_name", "setting_text", "settings_from"]

#: The ranking options a setting does not fix (min_keep, couplings) when none are given.
DEFAULT_RANKING = Ranking()
#: The row fields a setting fixes.
SETTING_FIELDS: tuple[str, ...] = ("scope", "normalize", "sign", "recalibrate")


@dataclass(frozen=True)
class Setting:
    """How scores become masks (the ranking's scope and normalize, the score recipe's sign) and what follows masking
    (recalibrate). Its ``ranking`` also carries the sweep's ``min_keep`` and ``couplings``, so a curve ranks with it
    as is; two settings are the same setting when their :meth:`as_dict` agree."""

    ranking: Ranking = Ranking()
    sign: Sign = "signed"
    recalibrate: Recalibrate = "none"

    def __post_init__(self) -> None:
        check_option("sign", self.sign, SIGNS)
        check_option("recalibrate", self.recalibrate, RECALIBRATIONS)

    @classmethod
    def of(
        cls,
        scope: str = "global",
        normalize: str = "none",
        sign: str = "signed",
        recalibrate: str = "none",
        *,
        base: Ranking = DEFAULT_RANKING,
    ) -> Setting:
        """The setting of these four values, its other ranking options (``min_keep``, ``couplings``) from ``base``.

        Raises:
            ConfigError: a value outside its valid values (named).
        """
        return cls(replace(base, scope=scope, normalize=normalize), sign, recalibrate)  # type: ignore[arg-type]

    @property
    def scope(self) -> str:
        return self.ranking.scope

    @property
    def normalize(self) -> str:
        return self.ranking.normalize

    def as_dict(self) -> dict[str, str]:
        """``{field: value}`` in :data:`SETTING_FIELDS` order."""
        return {"scope": self.scope, "normalize": self.normalize, "sign": self.sign, "recalibrate": self.recalibrate}

    def label(self) -> str:
        """Short text, e.g. ``global/mean/abs/bn``, prefixed by the protocol name when it has one (with ``+coupled``
        when its ranking couples residual writers)."""
        text = "/".join(self.as_dict().values())
        name = protocol_name({**self.as_dict(), "couplings": self.ranking.couplings})
        return f"{name} ({text})" if name else text


#: Named protocols. ``default`` was chosen on validation (module docstring; docs/results.md §3).
PROTOCOLS: dict[str, Setting] = {
    "paper": Setting.of("global", "none", "signed", "none"),
    "default": Setting.of("global", "mean", "abs", "bn"),
}


def setting_text(row: Mapping[str, Any]) -> str:
    """A row's setting as ``scope/normalize/sign/recalibrate`` plus its fine-tuning, e.g. ``global/mean/abs/bn+ft2+kd``.

    >>> setting_text({"scope": "global", "normalize": "none", "sign": "signed", "recalibrate": "bn"})
    'global/none/signed/bn'
    """
    return "/".join(str(row.get(f, "")) for f in SETTING_FIELDS) + recovery_label(row)


def protocol_name(row: Mapping[str, Any]) -> str:
    """The name of the protocol whose setting ``row`` has, ``+coupled`` appended when the row pruned residual writers
    together (its ``couplings`` is true); ``""`` when none (no ``recalibrate`` field means none, no ``couplings``
    field uncoupled).

    >>> paper = {"scope": "global", "normalize": "none", "sign": "signed", "recalibrate": "none"}
    >>> protocol_name({**paper, "couplings": True}), protocol_name({**paper, "couplings": "False"})
    ('paper+coupled', 'paper')
    """
    values = tuple(str(row.get(f, "none" if f == "recalibrate" else None)) for f in SETTING_FIELDS)
    for name, setting in PROTOCOLS.items():
        if tuple(setting.as_dict().values()) == values:
            return name + ("+coupled" if is_coupled(row) else "")
    return ""


def is_coupled(row: Mapping[str, Any]) -> bool:
    """Whether a row pruned coupled residual writers together (``couplings`` true: a bool, or text from a CSV)."""
    return str(row.get("couplings", False)).strip().lower() in ("true", "1")


def settings_from(
    protocols: Sequence[str],
    search: Mapping[str, Sequence[str]],
    explicit: Mapping[str, str],
    base: Ranking = DEFAULT_RANKING,
) -> list[Setting]:
    """The settings a sweep runs: named ``protocols``, then the product of the ``search`` lists (fields not searched
    take their ``explicit`` value); only ``explicit`` when both are empty. Duplicates are dropped, order kept. Every
    setting's ranking takes its other options (``min_keep``, ``couplings``) from ``base``.

    Raises:
        ConfigError: an unknown protocol name, search field or value.
    """
    settings: list[Setting] = []
    for name in protocols:
        check_option("protocols entry", name, tuple(PROTOCOLS))
        settings.append(Setting.of(**PROTOCOLS[name].as_dict(), base=base))
    unknown = sorted(set(search) - set(SETTING_FIELDS))
    if unknown:
        raise ConfigError(f"search: unknown field(s) {unknown}; valid fields: {', '.join(SETTING_FIELDS)}")
    if search:
        lists = [list(search.get(f) or [explicit[f]]) for f in SETTING_FIELDS]
        settings.extend(Setting.of(*combo, base=base) for combo in itertools.product(*lists))
    if not settings:
        settings.append(Setting.of(**{f: explicit[f] for f in SETTING_FIELDS}, base=base))
    return list(dict.fromkeys(settings))
