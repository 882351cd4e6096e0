"""Import before ``dl_backtrace`` (0.1.24) to run it as a CPU test oracle (see docs/dlb.md, "The oracle").

The package unconditionally imports prebuilt CUDA-12 extensions (cpython-312, torch-2.6 ABI), a module that
transformers 5 removed, and ``torch.export.export_for_training`` (removed in newer torch). This stubs the first two
(neither is reached on the CPU image-classification path) and aliases the third to ``torch.export.export``, which
returns the same training IR.
"""

import sys
import types

import torch.export as torch_export

for _name in ["wt_fc_v3_ops", "wt_selfattention_v3_ops", "wt_embedding_v2_ops", "wt_gavgpool_ops"]:
    sys.modules.setdefault(_name, types.ModuleType(_name))

try:
    import transformers.generation.beam_search  # noqa: F401
except Exception:  # noqa: BLE001 - any import failure means: provide the placeholder
    _module = types.ModuleType("transformers.generation.beam_search")

    class BeamSearchScorer:
        """Placeholder: only the package's LLM beam search uses it."""

        def __init__(self, *args, **kwargs):
            raise NotImplementedError("BeamSearchScorer is stubbed for the oracle")

    _module.BeamSearchScorer = BeamSearchScorer
    sys.modules["transformers.generation.beam_search"] = _module

if not hasattr(torch_export, "export_for_training"):
    torch_export.export_for_training = torch_export.export
