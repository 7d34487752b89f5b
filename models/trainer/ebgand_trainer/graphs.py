"""Forward graphs of the discriminator D and the generator G, built with onnx.helper.

D is an MLP autoencoder on the flattened, normalised window; its energy is the mean squared
reconstruction error. G maps noise to a normalised, flattened window, so its output can go
straight into D's autoencoder without D's normalisation.

Every parameter is an initializer with a fixed name. The D graph and the G graph name D's weights
the same way, which is what lets the trainer copy D's parameters into the frozen copy inside the
G step by name. Initializer values here are placeholders (zeros): the artifacts built from these
graphs are cached across seeds and data sets, and the trainer writes every parameter (weights
from the seed, normalisation from the data) into the checkpoint state before the first step.
"""
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what the daemon's model contract and ORT 1.19 both accept

# Normalisation is a pair of frozen parameters rather than constants so that one cached set of
# artifacts serves every data set of the same shape.
NORM_PARAMS = ("norm_mean", "norm_std")


@dataclass(frozen=True)
class Arch:
    """Everything that shapes the graphs (and so keys the artifact cache)."""

    window: int
    channels: int
    hidden: int
    latent: int  # D's code size, and G's noise size

    @property
    def features(self):
        return self.window * self.channels

    def d_layers(self):
        """(name, fan_in, fan_out, activation) of D's autoencoder, input to output. The code layer
        is linear so the pulling-away term sees D's codes unclipped."""
        f, h, k = self.features, self.hidden, self.latent
        return [("d_enc1", f, h, "Relu"), ("d_code", h, k, None),
                ("d_dec1", k, h, "Relu"), ("d_dec2", h, f, None)]

    def g_layers(self):
        f, h, k = self.features, self.hidden, self.latent
        return [("g_1", k, h, "Relu"), ("g_2", h, h, "Relu"), ("g_out", h, f, None)]


def param_names(layers):
    return [f"{name}.{p}" for name, *_ in layers for p in ("w", "b")]


def init_params(layers, rng):
    """Uniform(+-1/sqrt(fan_in)) weights and biases (PyTorch's Linear default), float32."""
    params = {}
    for name, fan_in, fan_out, _ in layers:
        bound = 1.0 / np.sqrt(fan_in)
        params[f"{name}.w"] = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        params[f"{name}.b"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return params


def _placeholders(layers):
    return [numpy_helper.from_array(np.zeros(shape, np.float32), f"{name}.{p}")
            for name, fan_in, fan_out, _ in layers
            for p, shape in (("w", (fan_in, fan_out)), ("b", (fan_out,)))]


def _mlp(nodes, x, layers, tag, taps=()):
    """Appends the layers to nodes; returns the output name and {layer: output} for layers in
    taps. tag keeps intermediate names apart when the same layers run on two inputs."""
    tapped = {}
    for name, _, _, act in layers:
        mm, pre, out = f"{tag}/{name}/mm", f"{tag}/{name}/pre", f"{tag}/{name}"
        nodes.append(helper.make_node("MatMul", [x, f"{name}.w"], [mm]))
        nodes.append(helper.make_node("Add", [mm, f"{name}.b"], [pre if act else out]))
        if act:
            nodes.append(helper.make_node(act, [pre], [out]))
        if name in taps:
            tapped[name] = out
        x = out
    return x, tapped


def _energy(nodes, arch, x_flat, tag, residual, energy):
    """D's autoencoder on x_flat [n, W*C]; returns the code name. residual is in normalised
    space (reconstruction minus input), energy its mean square per row."""
    recon, taps = _mlp(nodes, x_flat, arch.d_layers(), tag, taps=("d_code",))
    nodes.append(helper.make_node("Sub", [recon, x_flat], [residual]))
    nodes.append(helper.make_node("Mul", [residual, residual], [f"{tag}/sq"]))
    # opset 17: ReduceMean still takes axes as an attribute
    nodes.append(helper.make_node("ReduceMean", [f"{tag}/sq"], [energy], axes=[1], keepdims=0))
    return taps["d_code"]


def _model(nodes, name, inputs, outputs, initializers, doc):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ebgand-trainer", doc_string=doc)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def d_graph(arch):
    """Base graph of the D step. Inputs: `window` [batch, W, C] raw, `fake` [fake_batch, W*C]
    normalised (G's output). Outputs: `energy` [batch], `residual` [batch, W*C] (the served
    contract), `fake_energy` [fake_batch]. Exporting with only energy/residual prunes the fake
    branch, leaving exactly the inference model."""
    f = arch.features
    nodes = [
        # mean and std are [C]: they broadcast over [batch, W, C]
        helper.make_node("Sub", ["window", "norm_mean"], ["x_shift"]),
        helper.make_node("Div", ["x_shift", "norm_std"], ["x_norm"]),
        helper.make_node("Reshape", ["x_norm", "flat_shape"], ["x_flat"]),  # index w*C + c
    ]
    _energy(nodes, arch, "x_flat", "real", "residual", "energy")
    _energy(nodes, arch, "fake", "fake", "fake_residual", "fake_energy")
    inits = [numpy_helper.from_array(np.zeros(arch.channels, np.float32), "norm_mean"),
             numpy_helper.from_array(np.ones(arch.channels, np.float32), "norm_std"),
             numpy_helper.from_array(np.array([-1, f], np.int64), "flat_shape"),
             *_placeholders(arch.d_layers())]
    return _model(
        nodes, "ebgan_d",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT,
                                       ["batch", arch.window, arch.channels]),
         helper.make_tensor_value_info("fake", TensorProto.FLOAT, ["fake_batch", f])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("residual", TensorProto.FLOAT, ["batch", f]),
         helper.make_tensor_value_info("fake_energy", TensorProto.FLOAT, ["fake_batch"])],
        inits,
        f"EBGAN discriminator: MLP autoencoder {f}-{arch.hidden}-{arch.latent}-{arch.hidden}-{f}, "
        "energy = mean squared residual in normalised space.")


def g_graph(arch):
    """Base graph of the G step: `z` [batch, latent] -> `fake` [batch, W*C] (normalised), then
    D's autoencoder on it. Outputs: `fake`, `fake_energy` [batch], `fake_code` [batch, latent]
    (for the pulling-away term)."""
    f = arch.features
    nodes = []
    fake, _ = _mlp(nodes, "z", arch.g_layers(), "gen")
    nodes.append(helper.make_node("Identity", [fake], ["fake"]))
    code = _energy(nodes, arch, "fake", "fake", "fake_residual", "fake_energy")
    nodes.append(helper.make_node("Identity", [code], ["fake_code"]))
    return _model(
        nodes, "ebgan_g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", arch.latent])],
        [helper.make_tensor_value_info("fake", TensorProto.FLOAT, ["batch", f]),
         helper.make_tensor_value_info("fake_energy", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("fake_code", TensorProto.FLOAT, ["batch", arch.latent])],
        _placeholders(arch.g_layers()) + _placeholders(arch.d_layers()),
        f"EBGAN generator {arch.latent}-{arch.hidden}-{arch.hidden}-{f}, then a frozen copy of D.")
