"""The training loop: alternating D and G steps through ONNX Runtime's training API.

One step is one D update, plus one G update before it in EBGAN mode, so both modes get the same
number of D updates. In EBGAN mode a step is:

    G step: fake = G(z); loss_G = E(fake) + pt_weight * PT(codes); update G (D frozen)
    D step: loss_D = E(real) + mean(max(0, margin - E(fake))); update D
    sync:   copy D's parameters into the G step's frozen copy

In AE mode the G step is skipped and the margin is 0, which turns the D step into a plain
autoencoder step (the hinge is then max(0, -E) = 0): the same graphs give the ablation.

Experimental, opt-in (Config.g_target, Config.margin_mode; docs/EVALUATION.md): G's loss can aim
at the boundary energy of the healthy set, ((E(fake) - tau) / tau)^2, and the margin can be a
multiple of tau, tau being a quantile of D's energies on recent real batches. Neither beat the
plain autoencoder on the real recordings, so the defaults are EBGAN's.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

from . import graphs
from .ort import api, onnxruntime

LOSS_WINDOW = 20  # final losses are averaged over this many last steps: single steps are noisy
VAL_MAX = 4096  # validation windows scored per evaluation; the calibration uses all of them
MIN_GAIN = 1e-4  # relative drop in validation energy that counts as an improvement


class Stopped(Exception):
    """Raised at a step boundary when a stop (SIGTERM/SIGINT) was requested."""


class Diverged(Exception):
    """A loss became NaN or infinite."""


@dataclass(frozen=True)
class Config:
    mode: str  # "ebgan" or "ae"
    steps: int
    batch: int
    lr: float
    seed: int
    margin: float
    margin_decay: float  # fraction of the steps after which the margin has reached 0
    pt_weight: float
    eval_every: int
    patience: int  # evaluations without improvement before stopping; 0 = never stop early
    device: str  # "cpu" or "cuda"
    # Opt-in variants (ORT-NOTES, "when does the adversarial term help?"); the defaults are
    # plain EBGAN. g_target "boundary": G pulls E(G(z)) toward the boundary energy (the
    # target_quantile of D's energies on recent real batches) instead of minimising it.
    # margin_mode "relative": the margin is margin x that boundary energy, not absolute.
    g_target: str = "mean"  # "mean" or "boundary"
    target_quantile: float = 0.99
    margin_mode: str = "absolute"  # "absolute" or "relative"


@dataclass
class Result:
    d_module: object  # api.Module of the D step, holding the parameters to export
    steps_run: int
    best_step: int
    stopped_early: bool
    d_loss: float
    g_loss: float | None
    best_val_energy: float
    seconds: float


BOUNDARY_BATCHES = 8  # recent real batches whose energies give the boundary energy


def margin_at(cfg, step):
    """Linear decay from cfg.margin to 0 over the first margin_decay share of the steps. In
    the trials of ORT-NOTES a fixed margin left detection neutral or worse than the plain
    autoencoder; one decayed to 0 was the only regime that helped."""
    if cfg.mode == "ae":
        return 0.0
    return cfg.margin * max(0.0, 1.0 - (step - 1) / (cfg.margin_decay * cfg.steps))


class _Step:
    """A Module with its Optimizer, fed by input name (the graph fixes the positional order)."""

    def __init__(self, folder, prefix, params, cfg, options):
        self.state = api.CheckpointState.load_checkpoint(str(folder / f"{prefix}checkpoint"))
        names = {name for name, _ in self.state.parameters}
        # a parameter left at its zero placeholder would train, silently wrong
        if names != set(params):
            raise RuntimeError(f"{prefix}checkpoint parameters {sorted(names)} != {sorted(params)}")
        self.module = api.Module(str(folder / f"{prefix}training_model.onnx"), self.state,
                                 str(folder / f"{prefix}eval_model.onnx"), device=cfg.device,
                                 session_options=options)
        # Only after the Module exists: writing a parameter of a bare checkpoint state crashes
        # ORT 1.19 (segfault in Parameter.copy_from).
        for name, value in params.items():
            self.state.parameters[name].data = value
        self.optimizer = api.Optimizer(str(folder / f"{prefix}optimizer_model.onnx"), self.module)
        self.optimizer.set_learning_rate(cfg.lr)
        self.names = self.module.input_names()  # same for the training and the eval graph

    def train(self, **inputs):
        out = self.module(*(inputs[n] for n in self.names))
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return out

    def eval(self, **inputs):
        self.module.eval()
        try:
            return self.module(*(inputs[n] for n in self.names))
        finally:
            self.module.train()


def subset(x, n):
    """At most n windows, evenly spaced over x (x may be in time order)."""
    return x[::-(-len(x) // n)]  # stride = ceil(len / n)


def _finite(step, **losses):
    for name, value in losses.items():
        if not np.isfinite(value):
            raise Diverged(f"training diverged: {name} is {value} at step {step}; "
                           "try a lower --lr or a smaller --margin")


def train(arch, cfg, folder, train_x, val_x, mean, std, progress, stop_requested):
    """Trains on train_x [n, W, C] and returns a Result whose D module holds the parameters of
    the evaluation with the lowest validation energy. progress(step, d_loss, g_loss, val) is
    called after every step (val is None when the step was not evaluated); stop_requested()
    is polled at every step boundary."""
    t0 = time.monotonic()
    rng = np.random.default_rng(cfg.seed)
    onnxruntime.set_seed(cfg.seed)
    options = onnxruntime.SessionOptions()
    # These MLPs are far too small for intra-op parallelism to pay for its synchronisation.
    options.intra_op_num_threads = 1

    d_params = graphs.init_params(arch.d_layers(), rng)
    d = _Step(folder, "d_", {**d_params, "norm_mean": mean, "norm_std": std}, cfg, options)
    g = None
    if cfg.mode == "ebgan":
        g = _Step(folder, "g_", {**graphs.init_params(arch.g_layers(), rng), **d_params},
                  cfg, options)
        d_names = list(d_params)
        pt_weight = np.array(cfg.pt_weight, np.float32)
        one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)
    else:
        # Shape filler for the D step's fake input; with margin 0 it has no effect on the loss.
        fake = np.zeros((1, arch.features), np.float32)

    val_x = subset(val_x, VAL_MAX)
    no_fake, no_margin = np.zeros((1, arch.features), np.float32), np.array(0.0, np.float32)
    best_val, best_step, best_params, bad_evals = np.inf, 0, None, 0
    d_losses = collections.deque(maxlen=LOSS_WINDOW)
    g_losses = collections.deque(maxlen=LOSS_WINDOW)
    stopped_early, step = False, 0
    recent = collections.deque(maxlen=BOUNDARY_BATCHES)  # energies of recent real batches
    boundary_needed = g is not None and (cfg.g_target == "boundary"
                                         or cfg.margin_mode == "relative")

    for step in range(1, cfg.steps + 1):
        if stop_requested():
            raise Stopped()
        real = train_x[rng.integers(0, len(train_x), cfg.batch)]
        g_loss, boundary = None, None
        if boundary_needed:
            if not recent:  # step 1: D's energies before any update
                recent.append(d.eval(window=real, fake=no_fake, margin=no_margin)[1].copy())
            boundary = max(float(np.quantile(np.concatenate(recent), cfg.target_quantile)),
                           1e-12)
        if g is not None:
            z = rng.standard_normal((cfg.batch, arch.latent), dtype=np.float32)
            if cfg.g_target == "boundary":
                g_in = dict(energy_weight=zero, target=np.array(boundary, np.float32),
                            target_weight=np.array(1.0 / boundary ** 2, np.float32))
            else:
                g_in = dict(energy_weight=one, target=zero, target_weight=zero)
            g_loss, fake = g.train(z=z, pt_weight=pt_weight, **g_in)
            g_loss = float(g_loss)
            g_losses.append(g_loss)
        margin = margin_at(cfg, step)
        if cfg.margin_mode == "relative" and g is not None:
            margin *= boundary
        margin = np.array(margin, np.float32)
        d_loss, real_e = d.train(window=real, fake=fake, margin=margin)
        if boundary_needed:
            recent.append(np.array(real_e, copy=True))
        d_loss = float(d_loss)
        d_losses.append(d_loss)
        _finite(step, d_loss=d_loss, **({} if g_loss is None else {"g_loss": g_loss}))
        if g is not None:
            for name in d_names:
                g.state.parameters[name].data = d.state.parameters[name].data

        val = None
        if step % cfg.eval_every == 0 or step == cfg.steps:
            _, energies = d.eval(window=val_x, fake=no_fake, margin=no_margin)
            val = float(energies.mean())
            _finite(step, val_energy=val)
            # While the margin is on, G's samples push D around and healthy energy may rise on
            # purpose: such a D is no candidate, and a rise then is no lack of progress.
            if margin == 0 or step == cfg.steps:
                if val < best_val * (1 - MIN_GAIN):
                    # .data is a live view of ORT's buffer: copy to keep a snapshot
                    best_val, best_step, bad_evals = val, step, 0
                    best_params = {n: p.data.copy() for n, p in d.state.parameters}
                else:
                    bad_evals += 1
        progress(step, d_loss, g_loss, val)
        if cfg.patience and bad_evals >= cfg.patience:
            stopped_early = True
            break

    for name, value in best_params.items():
        d.state.parameters[name].data = value
    return Result(
        d_module=d.module, steps_run=step, best_step=best_step, stopped_early=stopped_early,
        d_loss=float(np.mean(d_losses)), g_loss=float(np.mean(g_losses)) if g_losses else None,
        best_val_energy=best_val, seconds=time.monotonic() - t0)
