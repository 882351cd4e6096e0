"""Run common torchvision / timm architectures through import -> units -> score -> compress check -> masks -> removal
-> ONNX; write the matrix.

Each architecture is built with random weights, made non-degenerate (normalisation scales and shifts drawn at random,
BatchNorm statistics measured on random images, so that a zeroed channel visibly changes the outputs), saved with
``torch.save(model.state_dict())`` and imported with :func:`medprune.models.importing.import_model`. The
imported checkpoint is then loaded, its units found, scored with every listed scorer on 4 random images, checked the
way ``medprune compress`` checks a model before reading any data (:func:`medprune.pruning.physical.check_compressible`
with LRP, or magnitude where LRP is refused), masked at 30 % (global ranking, coupled residual channels ranked
together) with the scores of the first scorer that worked, and physically pruned; the smaller model's outputs are
compared with the masked model's on 4 other random images, and the smaller (global) model is exported to ONNX and run
in onnxruntime.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/support_matrix.py            # all, writes docs/support.md
    .venv/bin/python scripts/support_matrix.py --only timm:convnext_tiny --out -   # one, to stdout
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medprune.checkpoint import load_checkpoint
from medprune.compression.evidence import ONNX_TOLERANCE, onnx_difference
from medprune.models import create_model
from medprune.models.importing import import_model
from medprune.models.support import UnsupportedModelError, check_units, scorer_blocker
from medprune.models.units import unit_groups
from medprune.pruning import mask_model, masks_from_scores, remove_units
from medprune.pruning.export import export_onnx
from medprune.pruning.physical import MIN_REMOVABLE_SHARE, RemovalPlan, check_compressible, removal_plan
from medprune.scoring import score

#: (architecture, input side in pixels); 32 px where the architecture allows it.
ARCHITECTURES: tuple[tuple[str, int], ...] = (
    ("torchvision:resnet18", 32),
    ("torchvision:resnet50", 32),
    ("torchvision:wide_resnet50_2", 32),
    ("torchvision:resnext50_32x4d", 32),
    ("torchvision:vgg11", 32),
    ("torchvision:vgg11_bn", 32),
    ("torchvision:densenet121", 32),
    ("torchvision:efficientnet_b0", 32),
    ("torchvision:mobilenet_v2", 32),
    ("torchvision:mobilenet_v3_small", 32),
    ("torchvision:shufflenet_v2_x0_5", 32),
    ("torchvision:regnet_x_400mf", 32),
    ("torchvision:regnet_y_400mf", 32),
    ("torchvision:convnext_tiny", 32),
    ("torchvision:squeezenet1_1", 32),
    ("torchvision:swin_t", 32),
    ("timm:resnet18", 32),
    ("timm:resnet50d", 32),
    ("timm:efficientnet_b0", 32),
    ("timm:mobilenetv3_small_050", 32),
    ("timm:regnety_002", 32),
    ("timm:densenet121", 32),
    ("timm:convnext_atto", 32),
    ("timm:efficientvit_b0", 32),
    ("timm:efficientvit_m0", 32),
    ("timm:vit_tiny_patch16_224", 32),
    ("timm:vit_small_patch16_224", 32),
    ("timm:deit_tiny_patch16_224", 32),
    ("timm:deit_small_patch16_224", 32),
    ("timm:swin_tiny_patch4_window7_224", 32),
)
SCORERS: tuple[str, ...] = ("lrp", "dlb", "ig", "magnitude")
OPTIONS: dict[str, dict[str, object]] = {"ig": {"steps": 8}}
RATE = 0.3
SCOPES: tuple[str, ...] = ("global", "layer")  # one ranking over all units / the same rate in every group
NUM_CLASSES = 2
TOLERANCE = 1e-4  # relative: max |physical - masked| / max |masked|


@dataclass
class Row:
    arch: str
    size: int
    units: str = ""
    scorers: dict[str, str] = field(default_factory=dict)
    compress: str = "-"
    removal: dict[str, str] = field(default_factory=dict)
    onnx: str = "-"
    seconds: float = 0.0


def non_degenerate(model: nn.Module, size: int, generator: torch.Generator) -> None:
    """Random normalisation affine parameters and layer scales; BatchNorm statistics measured on random images."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rpartition(".")[2] in ("layer_scale", "gamma"):  # ConvNeXt's 1e-6 layer scales: O(1)
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
                continue
            if param.dim() != 1:
                continue
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            elif name.endswith(("weight", "gamma")) or name.rpartition(".")[2] in ("gamma", "scale"):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: exact statistics of the calibration batch
        if norms:
            model.train()
            model(torch.randn(16, 3, size, size, generator=generator))
        model.eval()


def short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.replace("|", "/")


def run_one(arch: str, size: int, folder: Path) -> Row:
    """One architecture through every stage; a stage that raises is reported as FAILED with its message."""
    row = Row(arch, size)
    started = time.perf_counter()
    try:
        _run_stages(row, arch, size, folder)
    except Exception as error:  # noqa: BLE001 - the matrix reports every failure
        logging.debug("%s:\n%s", arch, traceback.format_exc())
        failure = f"FAILED: {type(error).__name__}: {short(error)}"
        if not row.units:
            row.units = failure
        elif row.compress == "-":
            row.compress = failure
        else:
            row.onnx = failure
    row.seconds = time.perf_counter() - started
    return row


def _run_stages(row: Row, arch: str, size: int, folder: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    try:
        source = create_model(arch, num_classes=NUM_CLASSES, image_size=size)
    except (ValueError, TypeError, AssertionError, RuntimeError) as error:
        row.units = f"refused: cannot be built at {size} px ({type(error).__name__}: {short(error)})"
        return
    non_degenerate(source, size, generator)
    weights = folder / f"{arch.replace(':', '_')}.pt"
    torch.save(source.state_dict(), weights)
    result = import_model(arch, weights, NUM_CLASSES, image_size=size, out_dir=folder / arch.replace(":", "_"))
    model, _ = load_checkpoint(result.weights)
    try:
        check_units(model)
        groups = unit_groups(model)
    except (UnsupportedModelError, ValueError) as error:
        row.units = f"refused: {short(error)}"
        return
    row.units = f"{sum(g.num_units for g in groups):,} in {len(groups)} groups"
    inputs = torch.randn(4, 3, size, size, generator=generator)
    targets = torch.tensor([0, 1, 0, 1])
    first = None
    for method in SCORERS:
        reason = scorer_blocker(model, method)
        if reason:
            row.scorers[method] = f"refused: {reason}"
            continue
        try:
            scores = score(model, inputs, targets, method, batch_size=4, **OPTIONS.get(method, {}))
        except Exception as error:  # noqa: BLE001 - the matrix reports every failure
            logging.debug("%s %s:\n%s", arch, method, traceback.format_exc())
            row.scorers[method] = f"FAILED: {type(error).__name__}: {short(error)}"
            continue
        finite = all(torch.isfinite(s).all() for s in scores.values())
        row.scorers[method] = "ok" if finite else "FAILED: non-finite scores"
        first = first or (scores if finite else None)
    compress_method = "lrp" if row.scorers.get("lrp") == "ok" else "magnitude"
    try:
        plan = check_compressible(model, compress_method)
        row.compress = f"ok ({compress_method})" + removable_note(plan)
    except UnsupportedModelError as error:
        row.compress = f"refused: {short(error)}"
    smaller = None
    for scope in SCOPES:
        if first is None:
            row.removal[scope] = "no scores"
            continue
        row.removal[scope], pruned = removal(model, first, scope, size, generator)
        smaller = smaller or pruned
    if smaller is not None:
        row.onnx = onnx_check(smaller, folder / f"{arch.replace(':', '_')}.onnx", size, generator)


def removable_note(plan: RemovalPlan) -> str:
    """``""``, or how much of the model physical removal keeps whole (its fixed groups)."""
    if not plan.fixed:
        return ""
    return f"; {len(plan.fixed)} groups kept whole, {plan.removable_share:.0%} of units removable"


def onnx_check(model: nn.Module, path: Path, size: int, generator: torch.Generator) -> str:
    """Export the smaller model to ONNX, run it in onnxruntime and compare with PyTorch under compress's own
    tolerance (:func:`medprune.compression.evidence.onnx_difference`: relative to the largest |logit|); the verdict."""
    check = torch.randn(4, 3, size, size, generator=generator)
    try:
        export_onnx(model, path, check[:1])
        diff, limit = onnx_difference(path, model, check)
    except Exception as error:  # noqa: BLE001 - the matrix reports every failure
        logging.debug("onnx:\n%s", traceback.format_exc())
        return f"FAILED: {type(error).__name__}: {short(error)}"
    return f"{'ok' if diff <= limit else 'MISMATCH'}: max diff {diff:.1e}"


def removal(
    model: nn.Module, scores: dict[str, torch.Tensor], scope: str, size: int, generator: torch.Generator
) -> tuple[str, nn.Module | None]:
    """Mask at RATE of the removable units with ``scope`` (fixed groups kept whole, grouped convs' channels removed
    as many per group), remove physically, compare outputs: the verdict (or the refusal / failure message) and the
    smaller model (``None`` unless removed)."""
    try:
        plan = removal_plan(model)
        masks = masks_from_scores(scores, RATE, scope=scope, **plan.mask_keywords())
        pruned = remove_units(model, masks)  # refuses (UnsupportedModelError) before any surgery if inexact
        masked = mask_model(model, masks)
        check = torch.randn(4, 3, size, size, generator=generator)
        with torch.no_grad():
            reference = masked(check)
            diff = (pruned(check) - reference).abs().max().item()
    except UnsupportedModelError as error:
        return f"refused: {short(error)}", None
    except Exception as error:  # noqa: BLE001 - the matrix reports every failure
        logging.debug("removal (%s):\n%s", scope, traceback.format_exc())
        return f"FAILED: {type(error).__name__}: {short(error)}", None
    relative = diff / max(reference.abs().max().item(), 1e-12)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    verdict = "ok" if relative <= TOLERANCE else "MISMATCH"
    text = f"{verdict}: max diff {diff:.1e} ({relative:.1e} rel.), params {before / 1e6:.2f}M -> {after / 1e6:.2f}M"
    return text, pruned


def passes(row: Row) -> bool:
    """Whether ``row`` went through import -> LRP -> compress check -> removal (global) -> ONNX."""
    return (
        row.scorers.get("lrp") == "ok"
        and row.compress.startswith("ok")
        and row.removal.get("global", "").startswith("ok")
        and row.onnx.startswith("ok")
    )


def markdown(rows: list[Row], total: float) -> str:
    notes: dict[str, int] = {}

    def cell(text: str) -> str:
        if not text.startswith(("refused: ", "FAILED: ")):
            return text
        kind, _, reason = text.partition(": ")
        number = notes.setdefault(reason, len(notes) + 1)
        return f"{kind} [{number}]"

    lines = [
        "# Support matrix",
        "",
        "Generated by `scripts/support_matrix.py` (do not edit by hand). Each architecture, with random weights made",
        "non-degenerate (random normalisation scales/shifts and layer scales, BatchNorm statistics measured on random",
        "images), is saved",
        "with `torch.save(model.state_dict())`, imported with `medprune import`",
        "(`medprune.models.importing.import_model`), re-loaded, its units found and scored on 4 random images by each",
        "scorer. *compress* is the check `medprune compress` makes before reading any data",
        "(`medprune.pruning.physical.check_compressible`: unit discovery, the scorer's rules, which unit groups",
        "physical removal can shrink exactly; with LRP, or magnitude where LRP is refused). Groups it cannot (channels",
        "normalised by a LayerNorm, or by a BatchNorm after a concatenation) are *kept whole*: their masks keep every",
        "unit, the ranking runs over the other units and the rate is a fraction of those; a model is refused only when",
        f"less than {MIN_REMOVABLE_SHARE:.0%} of its units are removable. Channels of grouped convolutions are removed",
        f"as many from every conv group. Then the model is masked at {RATE:.0%} of its removable units with the",
        "scores of the first scorer that worked (coupled residual channels ranked together) and physically pruned,",
        "twice: *global* (one ranking over all units, the default) and *per layer* (30 % of every removable group, so",
        "every kind of channel is removed). Each removal compares the smaller model's logits with the masked model's",
        "on 4 other random images: max absolute difference, relative to the largest masked logit (ok at <=",
        f"{TOLERANCE:g}), and parameters. *onnx* exports the smaller (global) model and compares onnxruntime's logits",
        f"with PyTorch's under compress's tolerance ({ONNX_TOLERANCE:g} x the largest |logit|,",
        f"at least {ONNX_TOLERANCE:g}).",
        "",
        "LRP and DLB run their exact family rules on torchvision VGG / ResNet and timm ViTs, and rules per operation",
        "over the traced graph on other CNNs (`medprune.scoring.lrp.graph`, `medprune.scoring.dlb.graph`).",
        "",
        "*refused [n]* means medprune stops up front with message [n] below (nothing runs); *FAILED* would be a bug.",
        "",
        "| arch | input | units | "
        + " | ".join(SCORERS)
        + " | compress | removal, global | removal, per layer | onnx | seconds |",
        "|---|---|---|" + "---|" * len(SCORERS) + "---|---|---|---|---|",
    ]
    for row in rows:
        cells = [cell(row.units), *(cell(row.scorers.get(m, "-")) for m in SCORERS)]
        cells += [cell(row.compress), *(cell(row.removal.get(scope, "-")) for scope in SCOPES), cell(row.onnx)]
        lines.append(f"| `{row.arch}` | {row.size} px | " + " | ".join(cells) + f" | {row.seconds:.1f} |")
    lines += ["", "Messages:", ""]
    lines += [f"{number}. {reason}" for reason, number in notes.items()]
    passed = [r.arch for r in rows if passes(r)]
    lines += [
        "",
        f"Through import -> LRP -> compress check -> removal -> ONNX: {len(passed)} of {len(rows)} architectures.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; "
        f"total {total:.0f} s (a shared machine: seconds are indicative).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="docs/support.md", help="markdown file, or - for stdout (default: %(default)s)"
    )
    parser.add_argument("--only", default="", help="comma-separated architectures (default: all listed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log tracebacks of failures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    wanted = [a for a in args.only.split(",") if a]
    unknown = [a for a in wanted if a not in dict(ARCHITECTURES)]
    if unknown:
        print(
            f"support_matrix: unknown --only {unknown}; valid: {', '.join(a for a, _ in ARCHITECTURES)}",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size in ARCHITECTURES:
            if wanted and arch not in wanted:
                continue
            row = run_one(arch, size, Path(tmp))
            print(
                f"{arch}: units {row.units}; {row.scorers}; compress {row.compress}; removal {row.removal}; onnx "
                f"{row.onnx}; {row.seconds:.1f}s",
                flush=True,
            )
            rows.append(row)
    text = markdown(rows, time.perf_counter() - started)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
