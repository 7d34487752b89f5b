"""Training artifacts of the D step and the G step (training, eval and optimizer graphs plus a
checkpoint), generated with onnxblock and cached on disk.

The losses are onnxblock Blocks stacked on the forward graphs of graphs.py. Their
hyperparameters (margin, pulling-away weight) are graph inputs, not constants, so one set of
artifacts serves every schedule and both modes: with margin 0 the D step is a plain autoencoder
step.
"""
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import graphs, version
from .ort import artifacts, onnxblock, onnxruntime

log = logging.getLogger("ebgand_trainer")

# Names of the files generate_artifacts writes for a step with the given prefix.
FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")
PT_EPS = 1e-8  # keeps the cosine of an all-zero code finite


def _scalar_input(graph, name):
    graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))


def _const(graph, name, value, dtype=np.float32):
    graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))


class DLoss(onnxblock.Block):
    """EBGAN's discriminator loss: mean E(real) + mean(max(0, margin - E(fake))), with the
    margin as a scalar graph input. The hinge is per sample, as in the paper, so a few fakes
    that already sit above the margin do not hide the ones that do not."""

    def build(self, energy, fake_energy):
        g = self.base.graph
        _scalar_input(g, "margin")
        g.node.extend([
            helper.make_node("ReduceMean", [energy], ["dloss/real"], keepdims=0),
            helper.make_node("Sub", ["margin", fake_energy], ["dloss/gap"]),
            helper.make_node("Relu", ["dloss/gap"], ["dloss/hinge"]),
            helper.make_node("ReduceMean", ["dloss/hinge"], ["dloss/fake"], keepdims=0),
            helper.make_node("Add", ["dloss/real", "dloss/fake"], ["loss"]),
        ])
        return "loss"


class GLoss(onnxblock.Block):
    """EBGAN's generator loss: mean E(G(z)) + pt_weight * PT(S), with PT the pulling-away term
    on D's codes S of the generated batch: the mean squared cosine similarity over all pairs of
    distinct rows. It penalises a generator that collapses onto one point of the healthy set.

    Generalised for the boundary generator (train.py, --g-target boundary):
        energy_weight * mean E + target_weight * mean((E - target)^2) + pt_weight * PT
    with the three as scalar inputs. EBGAN's loss is energy_weight 1, target_weight 0 (the
    extra term is then an exact 0); a Fence-GAN-style generator aiming at the boundary of the
    healthy set is energy_weight 0, target the boundary energy, target_weight 1 / target^2."""

    def build(self, fake_energy, fake_code):
        g = self.base.graph
        for name in ("pt_weight", "energy_weight", "target", "target_weight"):
            _scalar_input(g, name)
        _const(g, "gloss/axis1", [1], np.int64)  # ReduceSum takes axes as an input from opset 13
        _const(g, "gloss/eps", PT_EPS)
        _const(g, "gloss/one", 1.0)
        g.node.extend([
            helper.make_node("ReduceMean", [fake_energy], ["gloss/energy_raw"], keepdims=0),
            helper.make_node("Mul", ["energy_weight", "gloss/energy_raw"], ["gloss/energy_w"]),
            helper.make_node("Sub", [fake_energy, "target"], ["gloss/dev"]),
            helper.make_node("Mul", ["gloss/dev", "gloss/dev"], ["gloss/dev2"]),
            helper.make_node("ReduceMean", ["gloss/dev2"], ["gloss/dev2_mean"], keepdims=0),
            helper.make_node("Mul", ["target_weight", "gloss/dev2_mean"], ["gloss/target_w"]),
            helper.make_node("Add", ["gloss/energy_w", "gloss/target_w"], ["gloss/energy"]),
            # unit-length codes u; gram = u u^T holds the pairwise cosines
            helper.make_node("Mul", [fake_code, fake_code], ["gloss/sq"]),
            helper.make_node("ReduceSum", ["gloss/sq", "gloss/axis1"], ["gloss/norm2"], keepdims=1),
            helper.make_node("Add", ["gloss/norm2", "gloss/eps"], ["gloss/norm2e"]),
            helper.make_node("Sqrt", ["gloss/norm2e"], ["gloss/norm"]),
            helper.make_node("Div", [fake_code, "gloss/norm"], ["gloss/u"]),
            helper.make_node("Transpose", ["gloss/u"], ["gloss/ut"], perm=[1, 0]),
            helper.make_node("MatMul", ["gloss/u", "gloss/ut"], ["gloss/gram"]),
            helper.make_node("Mul", ["gloss/gram", "gloss/gram"], ["gloss/gram2"]),
            helper.make_node("ReduceSum", ["gloss/gram2"], ["gloss/all"], keepdims=0),
            # the diagonal (each code with itself) is not a pair: subtract sum_i |u_i|^4
            helper.make_node("Mul", ["gloss/u", "gloss/u"], ["gloss/u2"]),
            helper.make_node("ReduceSum", ["gloss/u2", "gloss/axis1"], ["gloss/unorm2"],
                             keepdims=0),
            helper.make_node("Mul", ["gloss/unorm2", "gloss/unorm2"], ["gloss/unorm4"]),
            helper.make_node("ReduceSum", ["gloss/unorm4"], ["gloss/diag"], keepdims=0),
            helper.make_node("Sub", ["gloss/all", "gloss/diag"], ["gloss/offdiag"]),
            # n (n - 1) pairs, n from the runtime batch size; at least 1 so n = 1 gives PT = 0
            helper.make_node("Shape", [fake_code], ["gloss/shape"], start=0, end=1),
            helper.make_node("Cast", ["gloss/shape"], ["gloss/n1"], to=TensorProto.FLOAT),
            helper.make_node("Squeeze", ["gloss/n1"], ["gloss/n"]),
            helper.make_node("Sub", ["gloss/n", "gloss/one"], ["gloss/nm1"]),
            helper.make_node("Mul", ["gloss/n", "gloss/nm1"], ["gloss/pairs0"]),
            helper.make_node("Max", ["gloss/pairs0", "gloss/one"], ["gloss/pairs"]),
            helper.make_node("Div", ["gloss/offdiag", "gloss/pairs"], ["gloss/pt"]),
            helper.make_node("Mul", ["pt_weight", "gloss/pt"], ["gloss/pt_weighted"]),
            helper.make_node("Add", ["gloss/energy", "gloss/pt_weighted"], ["loss"]),
        ])
        return "loss"


@contextlib.contextmanager
def _cwd(path):
    """onnxblock writes temporary models into the current directory; keep them out of the
    caller's (often the repository or the daemon's state directory)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _quiet_stderr():
    """The gradient-graph builder logs every graph transformer at INFO level straight to file
    descriptor 2, whatever the logger severity set from Python. Hold that back; replay it only
    if the build fails, where it may say why."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.buffer.write(log.read())
                sys.stderr.flush()


def cache_key(arch):
    """Hash of everything the artifacts depend on: the architecture, the package versions that
    generate and read them, and this package's graph code (so editing a graph invalidates old
    entries without a hand-kept version number)."""
    here = Path(__file__).parent
    blob = json.dumps({
        "arch": [arch.window, arch.channels, arch.hidden, arch.latent, arch.d, arch.kernel],
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "code": [hashlib.sha256((here / f).read_bytes()).hexdigest()
                 for f in ("graphs.py", "artifacts.py")],
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _generate(arch, out):
    d_params = graphs.param_names(arch.d_layers())
    with _cwd(out), _quiet_stderr():
        artifacts.generate_artifacts(
            graphs.d_graph(arch), requires_grad=d_params, frozen_params=list(graphs.NORM_PARAMS),
            loss=DLoss(), loss_input_names=["energy", "fake_energy"],
            # the eval model returns per-window energies too: validation needs no export
            additional_output_names=["energy"],
            optimizer=artifacts.OptimType.AdamW, artifact_directory=out, prefix="d_")
        # D's weights are frozen in the G step: listed in frozen_params they stay graph inputs
        # that the trainer can overwrite after each D step; unlisted they would be folded into
        # constants.
        artifacts.generate_artifacts(
            graphs.g_graph(arch), requires_grad=graphs.param_names(arch.g_layers()),
            frozen_params=d_params, loss=GLoss(), loss_input_names=["fake_energy", "fake_code"],
            additional_output_names=["fake"],  # reused as the D step's fake batch
            optimizer=artifacts.OptimType.AdamW, artifact_directory=out, prefix="g_")


def remove_stale_builds(cache_root):
    """Removes the temporary build folders (.build-*) a worker killed mid-way left in
    cache_root (older than version.STALE_S; a younger one may be a concurrent trainer's)."""
    version.remove_stale(Path(cache_root), ".build-*")


def ensure(arch, cache_root):
    """Returns the folder holding the artifacts for arch (d_* and g_* files), generating them
    on a miss. Built in a temporary folder and renamed into place, so concurrent trainers and
    interrupted builds never leave a half-written entry; one interrupted by SIGKILL is removed
    by a later call (remove_stale_builds)."""
    # Absolute: the build runs inside its folder, where a relative path means another place.
    cache_root = Path(cache_root).resolve()
    final = cache_root / cache_key(arch)
    if cache_root.is_dir():
        remove_stale_builds(cache_root)
    if final.is_dir():
        if whole(final):
            return final
        # An entry a power cut left with empty files would fail every run: build it again.
        log.warning("training cache entry %s is damaged (an empty or missing file); rebuilding it",
                    final)
        shutil.rmtree(final, ignore_errors=True)
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root))
    try:
        _generate(arch, tmp)
        version.sync_folder(tmp)  # its files on disk before the rename names them
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # else a concurrent build won the rename: use its entry
                raise
        version.sync(cache_root)  # the rename itself, not every entry's files again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


ENTRY_FILES = [f"{p}{n}" for p in ("d_", "g_")
               for n in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx",
                         "checkpoint")]


def whole(folder):
    """Whether a cache entry holds every file a run loads, none of them empty."""
    return all((folder / f).exists() and (folder / f).stat().st_size > 0 for f in ENTRY_FILES)
