"""ONNX Runtime's training modules, imported without PyTorch.

`onnxruntime.training/__init__.py` imports its `optim` package, which imports torch; the
on-device training API (`artifacts`, `onnxblock`, `api`) needs none of it. Registering an empty
module under that name first keeps torch out of the venv and out of the start-up time.
Import the training modules from here, never from onnxruntime.training directly.
"""
import sys
import types

_OPTIM = "onnxruntime.training.optim"
sys.modules.setdefault(_OPTIM, types.ModuleType(_OPTIM))

import onnxruntime  # noqa: E402
from onnxruntime.training import api, artifacts, onnxblock  # noqa: E402

__all__ = ["onnxruntime", "api", "artifacts", "onnxblock"]
