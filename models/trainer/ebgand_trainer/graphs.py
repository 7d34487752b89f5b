"""Forward graphs of the discriminator D and the generator G, built with onnx.helper.

D is an autoencoder on the normalised window; its energy is the mean squared reconstruction
error. Two shapes: an MLP on the flattened window (`mlp`, the default), or a temporal
convolutional one (`conv`, as the EBGAN paper's D is convolutional): 1-D convolutions over the
window's time axis with the channels as input channels, a dense code in the middle, and 1-D
convolutions back to the channels. G maps noise to a normalised, flattened window, so its output can go
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
    d: str = "mlp"  # D's shape: "mlp" or "conv"
    kernel: int = 5  # conv: kernel length along time (odd: "same" padding)

    @property
    def features(self):
        return self.window * self.channels

    @property
    def conv_channels(self):
        """conv: feature maps per convolution (a quarter of --hidden, at least 4)."""
        return max(4, self.hidden // 4)

    def d_layers(self):
        """(name, fan_in, fan_out, activation[, kernel]) of D's autoencoder, input to output; a
        fifth element marks a 1-D convolution (fan_in/fan_out are its input/output channels).
        The code layer is linear so the pulling-away term sees D's codes unclipped."""
        f, h, k = self.features, self.hidden, self.latent
        if self.d == "conv":
            c, m, w, kk = self.channels, self.conv_channels, self.window, self.kernel
            return [("d_conv1", c, m, "Relu", kk), ("d_conv2", m, m, "Relu", kk),
                    ("d_code", m * w, k, None), ("d_dec1", k, m * w, "Relu"),
                    ("d_deconv1", m, m, "Relu", kk), ("d_deconv2", m, c, None, kk)]
        return [("d_enc1", f, h, "Relu"), ("d_code", h, k, None),
                ("d_dec1", k, h, "Relu"), ("d_dec2", h, f, None)]

    def g_layers(self):
        f, h, k = self.features, self.hidden, self.latent
        return [("g_1", k, h, "Relu"), ("g_2", h, h, "Relu"), ("g_out", h, f, None)]


def param_names(layers):
    return [f"{name}.{p}" for name, *_ in layers for p in ("w", "b")]


def _shapes(layer):
    """(weight shape, receptive fan-in) of a dense layer or a 1-D convolution."""
    name, fan_in, fan_out, _, *kernel = layer
    if kernel:
        return (fan_out, fan_in, kernel[0]), fan_in * kernel[0]
    return (fan_in, fan_out), fan_in


def init_params(layers, rng):
    """Uniform(+-1/sqrt(fan_in)) weights and biases (PyTorch's Linear and Conv1d default),
    float32."""
    params = {}
    for layer in layers:
        name, _, fan_out = layer[:3]
        shape, fan = _shapes(layer)
        bound = 1.0 / np.sqrt(fan)
        params[f"{name}.w"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        params[f"{name}.b"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return params


def _placeholders(layers):
    return [numpy_helper.from_array(np.zeros(shape, np.float32), f"{layer[0]}.{p}")
            for layer in layers
            for p, shape in (("w", _shapes(layer)[0]), ("b", (layer[2],)))]


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


def _conv(nodes, x, layer, tag):
    """A 1-D convolution over time with "same" padding, [n, in, W] -> [n, out, W]."""
    name, _, _, act, kernel = layer
    conv, out = f"{tag}/{name}/conv", f"{tag}/{name}"
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"],
                                  [conv if act else out], kernel_shape=[kernel],
                                  pads=[kernel // 2, kernel // 2]))
    if act:
        nodes.append(helper.make_node(act, [conv], [out]))
    return out


def _conv_autoencoder(nodes, arch, x_flat, tag):
    """The conv D: x_flat [n, W*C] (index w*C + c) -> [n, C, W] -> two convolutions -> dense code
    -> dense back to [n, M, W] -> two convolutions -> [n, W*C]. Returns (recon, code)."""
    conv1, conv2, code, dec1, deconv1, deconv2 = arch.d_layers()
    nodes.append(helper.make_node("Reshape", [x_flat, "d_shape_nwc"], [f"{tag}/nwc"]))
    nodes.append(helper.make_node("Transpose", [f"{tag}/nwc"], [f"{tag}/ncw"], perm=[0, 2, 1]))
    h = _conv(nodes, f"{tag}/ncw", conv1, tag)
    h = _conv(nodes, h, conv2, tag)
    nodes.append(helper.make_node("Reshape", [h, "d_shape_flat_maps"], [f"{tag}/maps_flat"]))
    z, _ = _mlp(nodes, f"{tag}/maps_flat", [code], tag)
    h, _ = _mlp(nodes, z, [dec1], tag)
    nodes.append(helper.make_node("Reshape", [h, "d_shape_maps"], [f"{tag}/maps"]))
    h = _conv(nodes, f"{tag}/maps", deconv1, tag)
    h = _conv(nodes, h, deconv2, tag)
    nodes.append(helper.make_node("Transpose", [h], [f"{tag}/recon_nwc"], perm=[0, 2, 1]))
    nodes.append(helper.make_node("Reshape", [f"{tag}/recon_nwc", "flat_shape"],
                                  [f"{tag}/recon"]))
    return f"{tag}/recon", z


def _shape_consts(arch):
    """The Reshape targets the graphs use (constants, never trained)."""
    out = [numpy_helper.from_array(np.array([-1, arch.features], np.int64), "flat_shape")]
    if arch.d == "conv":
        m, w = arch.conv_channels, arch.window
        out += [numpy_helper.from_array(np.array(s, np.int64), n) for n, s in (
            ("d_shape_nwc", [-1, w, arch.channels]), ("d_shape_flat_maps", [-1, m * w]),
            ("d_shape_maps", [-1, m, w]))]
    return out


def _energy(nodes, arch, x_flat, tag, residual, energy):
    """D's autoencoder on x_flat [n, W*C]; returns the code name. residual is in normalised
    space (reconstruction minus input), energy its mean square per row."""
    if arch.d == "conv":
        recon, code = _conv_autoencoder(nodes, arch, x_flat, tag)
        taps = {"d_code": code}
    else:
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
             *_shape_consts(arch),
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
        f"EBGAN discriminator: {describe(arch)}, energy = mean squared residual in normalised "
        "space.")


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
        _placeholders(arch.g_layers()) + _placeholders(arch.d_layers())
        + (_shape_consts(arch) if arch.d == "conv" else []),
        f"EBGAN generator {arch.latent}-{arch.hidden}-{arch.hidden}-{f}, then a frozen copy of D.")


def describe(arch):
    """D's shape in words (graph doc strings, the manifest)."""
    f = arch.features
    if arch.d == "conv":
        m, k = arch.conv_channels, arch.kernel
        return (f"temporal convolutional autoencoder: conv1d {arch.channels}->{m}->{m} (kernel "
                f"{k}) over {arch.window} steps, dense code {m * arch.window}-{arch.latent}-"
                f"{m * arch.window}, conv1d {m}->{m}->{arch.channels}")
    return f"MLP autoencoder {f}-{arch.hidden}-{arch.latent}-{arch.hidden}-{f}"
