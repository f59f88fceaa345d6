"""Typed, documented configuration: dataclasses, YAML and ``--set key=value`` overrides, validation.

The named configs (the paper's experiments and the CPU-sized ones) are in :mod:`nfd.presets`.

Every run saves its resolved config (``config.yaml``) beside its outputs, and checkpoints store it as plain data
(a nested dict), never as a pickled object, so they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from nfd.errors import NfdError


class ConfigError(NfdError):
    """A bad preset name, config key or value; the message is one line naming the key."""


@dataclass
class EncodingConfig:
    """Random Fourier features gamma(x) = [cos 2piBx, sin 2piBx] applied to coordinates (paper Sec. 2.3)."""

    num_frequencies: int = 128
    """m, the number of frequencies (rows of B). 0 disables the encoding (identity), as for the 3D chairs."""
    scale: float = 1.0
    """sigma, the standard deviation of the entries of B ~ N(0, sigma^2)."""
    learnable: bool = False
    """Learn B as a parameter instead of keeping it a fixed buffer (App. A.2.5: no gain, slower)."""


@dataclass
class GeneratorConfig:
    """The neural function distribution: p(z), hypernetwork g_phi and function representation f_theta (Sec. 3.1)."""

    latent_dim: int = 64
    """Dimension of the latent z ~ N(0, I)."""
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    """Hidden layer widths of the function MLP f_theta (App. A.2: 3 x 128)."""
    hyper_hidden: list[int] = field(default_factory=lambda: [256, 512])
    """Hidden layer widths of the hypernetwork g_phi (App. A.2: 256, 512)."""
    leaky_slope: float = 0.1
    """Negative slope of the LeakyReLU used in f_theta and g_phi (0.1 in the authors' released code)."""
    init: str = "pytorch"
    """Initialisation of g_phi: 'pytorch' (PyTorch's default Linear init, as in the authors' released code) or
    'hyperfan_in' (every layer of f_theta starts with weights scaled to its fan-in; see nfd.models.hypernetwork).
    Measured on the demo presets: hyperfan-in starts f_theta's tanh saturated and the samples stay near-binary."""
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    """Fourier-feature encoding of the coordinates."""


@dataclass
class DiscriminatorConfig:
    """The point-cloud discriminator (Sec. 3.4, App. A.2) or the set-discriminator baseline (App. B.2)."""

    kind: str = "pointconv"
    """'pointconv' (the paper's model) or 'set' (PointNet/DeepSet baseline of App. B.2)."""
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    """Output channels of the PointConv layers, each followed by average pooling that keeps 1/2^d of the points (the
    paper text's layout); used when ``layers`` is empty."""
    layers: list[str] = field(default_factory=list)
    """The PointConv layers in order, each 'MODE:CHANNELS' or 'MODE:CHANNELS:NEIGHBOURS' (default neighbours:
    ``neighbours``). MODE 'pool': PointConv at every point, then average pooling onto 1/2^d farthest-point queries
    (same neighbours); 'conv': PointConv at every point, no pooling; 'strided': PointConv evaluated at 1/2^d
    farthest-point queries only. The authors' released chairs config is [conv:32:8, pool:64, pool:128, pool:256].
    Empty: 'pool:C' for every entry C of ``channels``. A final PointConv to one channel from all remaining points
    always follows."""
    neighbours: int = 0
    """Neighbours per PointConv/pooling query; 0 means 3^d as in the paper."""
    weight_hidden: list[int] = field(default_factory=lambda: [16, 16, 16, 16])
    """Hidden widths of every weight MLP W(x_i - x); its output width is the last entry (the 'mid' channels)."""
    norm_p: float = 2.0
    """p of the l_p metric used for the neighbour search (inf allowed)."""
    batchnorm: bool = True
    """Batchnorm between PointConv layers (App. A.2.5: crucial for stability)."""
    weightnet_batchnorm: bool = True
    """Batchnorm inside the weight MLPs."""
    leaky_slope: float = 0.2
    """Negative slope of the LeakyReLU between layers."""
    set_hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Set discriminator only: hidden widths of phi and of rho."""
    set_num_frequencies: int = 64
    """Set discriminator only: frequencies of the RFF encodings gamma_x and gamma_y."""
    set_scale: float = 1.0
    """Set discriminator only: sigma of the RFF encodings gamma_x and gamma_y."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run (Sec. 3.5, App. A.2)."""

    model: str = "gan"
    """'gan' (NFD against the discriminator) or 'autodecoder' (baseline of App. B.1)."""
    batch_size: int = 128
    """Examples per step."""
    num_points: int = 0
    """K, points sampled per example per step (0 = every point); resolution independence (Sec. 3.2)."""
    steps: int = 0
    """Training steps (>= 0); 0 means derive from epochs."""
    epochs: float = 150.0
    """Passes over the training split, used when steps is 0."""
    max_seconds: float = 0.0
    """Wall-clock budget of the training loop in seconds (0 = none): training ends after the first step that
    reaches it (or at train.steps, whichever comes first) and saves the final model. The seconds trained so far
    are kept in checkpoints and snapshots (``train_seconds``), so quality can be read against wall time."""
    lr_g: float = 1e-4
    """Adam learning rate of the hypernetwork (or of the auto-decoder)."""
    lr_d: float = 4e-4
    """Adam learning rate of the discriminator."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    r1_weight: float = 10.0
    """Weight of the R1 penalty on real sets."""
    r1_on: str = "sigmoid"
    """Differentiate D's 'sigmoid' output (the probability, as the authors' released code does) or its 'logit' for
    R1. The sigmoid's gradient is sigmoid' times the logit's (1/4 of it at D = 1/2), so it fades as D saturates; the
    logit's does not (a 16x stronger penalty at D = 1/2 for the same weight)."""
    autodecoder_prior_std: float = 1e-2
    """Auto-decoder only: std of the Gaussian prior of the per-example latents (small, see App. B.1)."""
    autodecoder_lr_latent: float = 1e-3
    """Auto-decoder only: Adam learning rate of the per-example latents."""
    ema_beta: float = 0.0
    """Exponential moving average of the generator's weights (StyleGAN's practice): after every G step,
    G_ema = beta * G_ema + (1 - beta) * G. When on, sampling (model.pt, snapshots, previews, ``nfd sample``) uses
    G_ema; training never does. Saved in checkpoints and resumed exactly. 0 keeps none (the authors' code keeps
    none)."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (and always at the end)."""
    sample_every: int = 500
    """Save a grid of samples from fixed latents every this many steps."""
    keep_every: int = 0
    """Also keep the generator alone (weights and config, no optimiser state) every this many steps as
    snapshots/step_NNNNNNN.pt, for quality-over-training curves (`nfd evaluate progress`); 0 keeps none."""
    num_fixed_samples: int = 16
    """Number of fixed latents in the periodic sample grids."""
    seed: int = 0
    """Seed of every random number generator of the run."""
    num_workers: int = 0
    """DataLoader worker processes."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'."""
    threads: int = 0
    """torch intra-op threads on CPU; 0 keeps torch's default (the number of cores)."""
    d_branches: str = "auto"
    """'auto', 'parallel' or 'sequential': on the CPU, run the D step's two branches side by side, the real one (D
    on the real sets, R1's double backward) on the calling thread and the fake one (G's samples, D on them) on a
    second, each with half the intra-op threads, instead of one after the other with all of them. Same gradients,
    summed in the same order; the peak memory holds both branches' graphs at once. 'auto' runs them side by side
    with two or more threads in one process when a step sees at most ``PARALLEL_BRANCHES_MAX_VALUES`` (batch x
    points) values, the demo sizes, where small products use a second thread poorly."""
    amp: str = "auto"
    """bf16 autocast of the GAN step's forward passes: 'auto', 'on' or 'off' (true / false read as 'on' / 'off').
    'auto' turns it on where the hardware multiplies bf16 natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16
    or AMX: demo steps 1.7-2.2x faster on a 2-core AMD EPYC with AVX-512 BF16) and off elsewhere (emulated: 12x
    slower on an AVX2-only CPU); the run's saved config records the outcome. The paper trains in float32 ('off');
    bf16 rounds to ~3 significant digits, and on both demo presets its sample quality over 3 seeds x {1, 2} threads
    was within float32's seed-to-seed spread (README, Performance)."""


@dataclass
class Config:
    """A full experiment: model, discriminator and training settings. Data dimensions come from the data file."""

    name: str = "custom"
    """Name of the preset this config started from."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """The neural function distribution."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """The discriminator."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""


ALIASES = {
    "batch": "train.batch_size",
    "points": "train.num_points",
    "steps": "train.steps",
    "seed": "train.seed",
    "device": "train.device",
    "threads": "train.threads",
}
"""Short names accepted by ``--set`` (e.g. ``--set batch=24``)."""


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested data (safe for YAML, JSON and weights-only checkpoints)."""
    return dataclasses.asdict(cfg)


AMP_CHOICES = ("auto", "on", "off")
"""Values of ``train.amp`` (resolved per device by :func:`nfd.training.precision.resolve_amp`)."""
BOOLEAN_SPELLINGS: dict[str, dict[bool, str]] = {"train.amp": {True: "on", False: "off"}}
"""String keys that also accept true / false (``train.amp`` was a boolean; old configs and checkpoints say so)."""


def _coerce(value: Any, current: Any, key: str, annotation: str = "") -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if isinstance(current, list) and annotation == "list[str]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key '{key}' expects a list of strings, got {value!r}")
        return list(value)
    if isinstance(current, list):
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"config key '{key}' expects a list of integers, got {value!r}")
        return list(value)
    if isinstance(current, str):
        if key in BOOLEAN_SPELLINGS and isinstance(value, bool):
            return BOOLEAN_SPELLINGS[key][value]
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' cannot be set")


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (``train.lr_g``) or an alias (``batch``) to ``value``, type-checked."""
    key = ALIASES.get(key, key)
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        types = {f.name: str(f.type) for f in fields(obj)}
        names = set(types)
        if part not in names:
            where = ".".join(parts[:i]) or "config"
            raise ConfigError(f"unknown config key '{key}' ('{part}' is not in {where}: {', '.join(sorted(names))})")
        if i == len(parts) - 1:
            current = getattr(obj, part)
            if is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"config key '{key}' is a section and expects a mapping")
                for k, v in value.items():
                    set_value(cfg, f"{key}.{k}", v)
            else:
                setattr(obj, part, _coerce(value, current, key, types[part]))
        else:
            obj = getattr(obj, part)
            if not is_dataclass(obj):
                raise ConfigError(f"unknown config key '{key}' ('{part}' is not a section)")


def apply_dict(cfg: Config, data: dict[str, Any], prefix: str = "") -> Config:
    """Apply a nested mapping of overrides (e.g. read from YAML) to ``cfg`` in place and return it."""
    for k, v in data.items():
        if prefix == "" and k == "name":
            if not isinstance(v, str):
                raise ConfigError("config key 'name' expects a string")
            cfg.name = v
            continue
        set_value(cfg, f"{prefix}{k}", v)
    return cfg


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML scalars/lists (``1e-4``, ``true``, ``[32,64]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {k}: cannot parse value '{v}': {e}") from None
    return out


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from :func:`to_dict` output (e.g. stored in a checkpoint); unknown keys are errors."""
    data = copy.deepcopy(data)
    cfg = Config()
    return apply_dict(cfg, data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of overrides; a clear error names the file on failure."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return data


LAYER_MODES = ("pool", "conv", "strided")
"""Modes of a discriminator layer (see ``DiscriminatorConfig.layers``)."""


def parse_layers(cfg: DiscriminatorConfig) -> list[tuple[str, int, int]]:
    """The discriminator's layers as (mode, channels, neighbours) triples; neighbours 0 means ``cfg.neighbours`` (or
    3^d). ``cfg.layers`` when given, else 'pool' for every entry of ``cfg.channels``."""
    if not cfg.layers:
        return [("pool", c, 0) for c in cfg.channels]
    out = []
    for token in cfg.layers:
        parts = token.split(":")
        ok = len(parts) in (2, 3) and parts[0] in LAYER_MODES and all(p.isdigit() and int(p) > 0 for p in parts[1:])
        if not ok:
            raise ConfigError(
                f"discriminator.layers: bad entry '{token}' (expected MODE:CHANNELS[:NEIGHBOURS] with "
                f"MODE in {', '.join(LAYER_MODES)} and positive integers)"
            )
        out.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 0))
    return out


def validate(cfg: Config) -> None:
    """Reject values that no code path accepts, naming the key."""
    if cfg.discriminator.kind not in ("pointconv", "set"):
        raise ConfigError(f"discriminator.kind must be 'pointconv' or 'set', got '{cfg.discriminator.kind}'")
    if cfg.train.model not in ("gan", "autodecoder"):
        raise ConfigError(f"train.model must be 'gan' or 'autodecoder', got '{cfg.train.model}'")
    if cfg.train.r1_on not in ("logit", "sigmoid"):
        raise ConfigError(f"train.r1_on must be 'logit' or 'sigmoid', got '{cfg.train.r1_on}'")
    if cfg.train.amp not in AMP_CHOICES:
        raise ConfigError(f"train.amp must be 'auto', 'on' or 'off' (or true / false), got '{cfg.train.amp}'")
    if cfg.train.d_branches not in ("auto", "parallel", "sequential"):
        raise ConfigError(f"train.d_branches must be 'auto', 'parallel' or 'sequential', got '{cfg.train.d_branches}'")
    if not 0.0 <= cfg.train.ema_beta < 1.0:  # also false for nan
        raise ConfigError(f"train.ema_beta must be in [0, 1), got {cfg.train.ema_beta}")
    tc = cfg.train
    for key, low in (
        ("batch_size", 1),
        ("steps", 0),
        ("num_points", 0),
        ("checkpoint_every", 1),
        ("sample_every", 1),
        ("keep_every", 0),
        ("num_fixed_samples", 1),
        ("num_workers", 0),
        ("threads", 0),
    ):
        if getattr(tc, key) < low:
            meaning = {
                "steps": " (0 = derive from train.epochs)",
                "num_points": " (0 = all points)",
                "keep_every": " (0 = keep no snapshots)",
                "threads": " (0 = torch's default)",
            }.get(key, "")
            raise ConfigError(f"train.{key} must be >= {low}{meaning}, got {getattr(tc, key)}")
    for key in ("lr_g", "lr_d", "autodecoder_lr_latent", "epochs", "autodecoder_prior_std"):
        value, frozen = getattr(tc, key), key in ("lr_g", "lr_d")  # a zero learning rate freezes that network
        if not (math.isfinite(value) and (value >= 0 if frozen else value > 0)):
            raise ConfigError(f"train.{key} must be a finite number {'>=' if frozen else '>'} 0, got {value}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(tc, key) < 1.0:
            raise ConfigError(f"train.{key} must be in [0, 1), got {getattr(tc, key)}")
    if not (math.isfinite(tc.max_seconds) and tc.max_seconds >= 0):
        raise ConfigError(f"train.max_seconds must be a finite number >= 0 (0 = no budget), got {tc.max_seconds}")
    if not (math.isfinite(tc.r1_weight) and tc.r1_weight >= 0):
        raise ConfigError(f"train.r1_weight must be a finite number >= 0, got {tc.r1_weight}")
    if not cfg.discriminator.channels and not cfg.discriminator.layers:
        raise ConfigError("discriminator.channels must not be empty")
    parse_layers(cfg.discriminator)
    if cfg.generator.init not in ("pytorch", "hyperfan_in"):
        raise ConfigError(f"generator.init must be 'pytorch' or 'hyperfan_in', got '{cfg.generator.init}'")
    if not cfg.discriminator.weight_hidden:
        raise ConfigError("discriminator.weight_hidden must not be empty")
    if cfg.discriminator.norm_p <= 0:
        raise ConfigError("discriminator.norm_p must be > 0 (inf allowed)")


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically (temp file, then rename)."""
    from nfd.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, docstring) for every field, read from the attribute docstrings; used by ``--help``."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    src = inspect.getsource(cls)
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    for a, b in zip(body, body[1:]):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
        ):
            docs[a.target.id] = str(b.value.value)
    rows: list[tuple[str, str, str]] = []
    inst = cls()
    for f in fields(cls):
        val = getattr(inst, f.name)
        if is_dataclass(val):
            rows.extend(describe(type(val), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", repr(val), docs.get(f.name, "")))
    return rows
