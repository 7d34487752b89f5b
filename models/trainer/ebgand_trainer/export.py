"""Export of the trained D as the served model, and calibration of its threshold.

The served model is the D step's eval graph pruned to `energy` and `residual`: the fake branch
and the loss fall away, leaving window -> normalise -> autoencoder -> residual, energy, with the
trained parameters (normalisation included) as initializers. Calibration scores the exported
model itself with a plain InferenceSession, so the threshold is computed by the same graph the
daemon will run.
"""
import os
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import graphs
from .ort import onnxruntime

OUTPUTS = ["energy", "residual"]
CHUNK = 8192  # windows per inference call: bounds memory on large hold-out sets


class ExportError(Exception):
    """The exported model breaks the daemon's contract or disagrees with the trained one."""


def export(d_module, arch, folder):
    """Returns the bytes of the inference model. folder receives ORT's raw export (which only
    writes to a path) and must be the caller's temporary folder."""
    fd, raw = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        d_module.export_model_for_inferencing(raw, OUTPUTS)
        model = onnx.load(raw)
    finally:
        os.remove(raw)
    _tidy(model, arch)
    return model.SerializeToString(deterministic=True)


def _tidy(model, arch):
    """Brings ORT's export to the models/README.md contract. The export imports every operator
    domain the training build knows (com.microsoft, ...) although the graph uses only the
    default one, and shape inference renamed the residual's batch dimension; the input and the
    nodes are already right and are checked, not changed."""
    g = model.graph
    want = [("window", ["batch", arch.window, arch.channels])]
    got = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
           for i in g.input]
    if got != want or g.input[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ExportError(f"exported inputs {got}; expected float32 {want}")
    if sorted(o.name for o in g.output) != sorted(OUTPUTS):
        raise ExportError(f"exported outputs {[o.name for o in g.output]}; expected {OUTPUTS}")
    if {n.domain for n in g.node} - {"", "ai.onnx"}:
        raise ExportError("exported graph uses operators outside the default ONNX domain")
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", graphs.OPSET))
    model.ir_version = graphs.IR_VERSION
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["batch", arch.features]),
    ])
    del g.value_info[:]  # intermediate shapes from the training graph; the checker re-infers
    model.producer_name, model.producer_version = "ebgand-trainer", "1"
    model.doc_string = ("EBGAN discriminator: energy = mean squared reconstruction residual of the "
                        "normalised window. Input normalisation is inside the graph.")
    onnx.checker.check_model(model, full_check=True)


def session(model_bytes):
    """The plain inference API on the CPU: what any ONNX Runtime consumer does with the file."""
    return onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def energies(sess, windows):
    """Energy per window [n], float32 as the daemon sees it."""
    return np.concatenate([sess.run(["energy"], {"window": windows[i:i + CHUNK]})[0]
                           for i in range(0, len(windows), CHUNK)])


def check_against_training(sess, d_module, windows, arch):
    """The exported graph must score like the trained module did, window for window: a wrong
    pruning or a lost parameter would otherwise ship silently."""
    d_module.eval()
    names = d_module.input_names()
    feeds = {"window": windows, "fake": np.zeros((1, arch.features), np.float32),
             "margin": np.array(0.0, np.float32)}
    _, trained = d_module(*(feeds[n] for n in names))
    exported = energies(sess, windows)
    if not np.allclose(exported, trained, rtol=1e-4, atol=1e-7):
        worst = float(np.max(np.abs(exported - trained)))
        raise ExportError(f"exported model's energies differ from the trained module's by up "
                          f"to {worst:.3g}")


def calibrate(holdout_energies, quantile):
    """Threshold = the quantile of held-out healthy energies (numpy's linear method, as the
    manifest documents), computed in float64."""
    e = holdout_energies.astype(np.float64)
    threshold = float(np.quantile(e, quantile))
    if not np.isfinite(threshold) or threshold <= 0:
        raise ExportError(f"calibrated threshold is {threshold}; the model is unusable")
    return threshold
