"""Making a compressed model shippable: its confidence checked and recalibrated (``deploy.calibration``), int8
quantization under ONNX Runtime with its equivalence and latency evidence (``deploy.quantize``), explanation drift
of the compressed model against the original (``deploy.explanations``), and a MONAI bundle (``deploy.bundle``). The
commands are :mod:`medprune.runs.compress` (``--quantize``, ``--calibrate``, ``--export``) and
:mod:`medprune.runs.quantize`."""
