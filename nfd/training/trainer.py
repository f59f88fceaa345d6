"""The training loop: the GAN run and the auto-decoder baseline, with exact resume and a clean stop on a signal.

:class:`Trainer` owns the models, optimisers and run folder; each step it draws its batch from the ``(seed, step)``
streams of :func:`~nfd.training.step.step_generator` (so a resumed run replays exactly the steps it would have
taken), runs one step of :mod:`nfd.training.step` (or the auto-decoder's), and writes ``metrics.tsv``, previews,
snapshots and checkpoints. SIGINT/SIGTERM stop it after a finished, checkpointed step (:class:`StopSignals`,
:class:`Interrupted`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nfd.config import Config, save_yaml, to_dict
from nfd.errors import NfdError
from nfd.models.build import build_discriminator_for, build_generator, pick_device
from nfd.training import checkpoint as ckpt
from nfd.training import distributed, runfolder
from nfd.training.loss_log import MetricsLog
from nfd.training.precision import resolve_amp
from nfd.training.step import (
    ParallelBranches,
    adam,
    gan_optimizers,
    gan_step,
    parallel_branches_for,
    step_generator,
    update_ema,
)
from nfd.viz.preview import save_preview

METRIC_COLUMNS = ["step", "loss_d", "loss_g", "r1", "d_real", "d_fake", "sat_fake", "sat_real", "step_time"]
"""Columns of ``metrics.tsv`` (GAN runs)."""
AD_METRIC_COLUMNS = ["step", "loss", "recon", "prior", "step_time"]
"""Columns of ``metrics.tsv`` (auto-decoder runs)."""


@dataclass
class Batch:
    """One step's data: the shared coordinates, the real features and the examples they come from."""

    coords: torch.Tensor
    features: torch.Tensor
    index: torch.Tensor
    point_idx: np.ndarray | None


class Trainer:
    """Owns the models, optimisers and run folder; ``fit()`` trains to ``total_steps``, resuming if asked."""

    def __init__(self, cfg: Config, data_path: str | Path, out_dir: str | Path, device: str | None = None) -> None:
        from nfd.data.dataset import PointCloudDataset

        self.cfg = cfg
        self.out = Path(out_dir)
        self.data_path = Path(data_path)
        tc = cfg.train
        self.world, self.device = distributed.init_from_env(pick_device(device or tc.device))
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.data = PointCloudDataset(self.data_path, split="train", num_points=0)
        if len(self.data) < 1:
            raise NfdError(f"{self.data_path}: the train split is empty")
        self.coord_dim, self.feature_dim = self.data.coord_dim, self.data.feature_dim
        self.grid_shape = tuple(int(s) for s in self.data.grid_shape)
        self.all_coords = self.data.coords.to(self.device)
        n_total = self.all_coords.shape[0]
        self.num_points = tc.num_points if 0 < tc.num_points < n_total else 0
        self.batch_size = min(tc.batch_size, len(self.data))
        amp, amp_why = (
            resolve_amp(tc.amp, self.device) if tc.model == "gan" else ("off", "the auto-decoder has no bf16 path")
        )
        # the config saved with the run records what is used, not what was asked for
        for key, used, why in (
            ("num_points", self.num_points, f"the data has {n_total} points per example"),
            ("batch_size", self.batch_size, f"the train split has {len(self.data)} examples"),
            ("amp", amp, amp_why),
        ):
            if getattr(tc, key) != used:
                if self.world.is_main:
                    tqdm.write(f"nfd train: train.{key}={getattr(tc, key)} -> {used} ({why})")
                setattr(tc, key, used)
        if self.batch_size % self.world.size:
            raise NfdError(f"batch size {self.batch_size} is not divisible by the {self.world.size} training processes")
        self.steps_per_epoch = max(1, len(self.data) // self.batch_size)
        self.total_steps = tc.steps if tc.steps > 0 else max(1, math.ceil(tc.epochs * self.steps_per_epoch))

        self.G = build_generator(
            cfg, self.coord_dim, self.feature_dim, num_examples=len(self.data), points_per_example=n_total
        ).to(self.device)
        betas = (tc.beta1, tc.beta2)
        if tc.model == "gan":
            self.D = build_discriminator_for(cfg, self.coord_dim, self.feature_dim).to(self.device)
            self.opt_g, self.opt_d = gan_optimizers(self.G, self.D, tc)
        else:
            self.D = None
            latent_params = list(self.G.latents.parameters())
            ids = {id(p) for p in latent_params}
            decoder_params = [p for p in self.G.parameters() if id(p) not in ids]
            self.opt_g = adam(
                [{"params": decoder_params, "lr": tc.lr_g}, {"params": latent_params, "lr": tc.autodecoder_lr_latent}],
                tc.lr_g,
                betas,
            )
            self.opt_d = None
        for module in (self.G, self.D):
            if module is not None:
                distributed.broadcast_module(module, self.world)
        self.G_ema: torch.nn.Module | None = None
        if tc.ema_beta > 0 and tc.model == "gan":
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval()
        fixed = step_generator(tc.seed, 0, stream=99)
        self.fixed_z = self.G.sample_latents(tc.num_fixed_samples, generator=fixed).to(self.device)
        self._planner: ThreadPoolExecutor | None = None
        self._pending_plan: Future | None = None
        self._branches: ParallelBranches | None = None
        self.step = 0
        self.train_seconds = 0.0
        """Wall-clock seconds of the training loop so far (over resumes), checked against train.max_seconds."""

    # -- data -------------------------------------------------------------------------------------------------
    def batch(self, step: int) -> Batch:
        """The examples and point subset of ``step``: a per-epoch permutation and a K-subset shared by the batch.

        Every rank draws the global batch and keeps its share ``[rank::world]`` of the examples."""
        seed = self.cfg.train.seed
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(len(self.data), generator=step_generator(seed, epoch, stream=1))
        index = perm[pos * self.batch_size : (pos + 1) * self.batch_size].sort().values
        index = index[self.world.rank :: self.world.size]
        point_idx = self.point_subset(step)
        feats = self.data.read(index.tolist(), point_idx).to(self.device, non_blocking=True)
        return Batch(coords=self.coords_of(point_idx), features=feats, index=index, point_idx=point_idx)

    def point_subset(self, step: int) -> np.ndarray | None:
        """The sorted indices of the ``train.num_points`` points of ``step`` (None: all of them)."""
        if not self.num_points:
            return None
        g = step_generator(self.cfg.train.seed, step, stream=2)
        return torch.randperm(self.all_coords.shape[0], generator=g)[: self.num_points].sort().values.numpy()

    def coords_of(self, point_idx: np.ndarray | None) -> torch.Tensor:
        return self.all_coords if point_idx is None else self.all_coords[torch.as_tensor(point_idx, device=self.device)]

    def _plan_ahead(self, step: int) -> None:
        """Wait for the neighbour plan of ``step`` (if it is being built), then start building the next step's.

        With a fresh point subset every step, the plan (farthest-point queries, KD-tree searches: ~0.1 s for the
        2,048 points of ``demo_chairs``) is serial work that a second core can do while this step trains. The plan
        depends only on the coordinates, and the step fetches it from the same content-keyed cache, so the numbers
        are the same with or without it."""
        if self._pending_plan is not None:
            self._pending_plan.result()  # re-raises an error of the side thread here
            self._pending_plan = None
        if self._planner is not None and step + 1 < self.total_steps:
            coords = self.coords_of(self.point_subset(step + 1))
            self._pending_plan = self._planner.submit(self.D.plan, coords)

    # -- steps ------------------------------------------------------------------------------------------------
    def gan_step(self, step: int) -> dict[str, float]:
        """One D step with R1 on real sets, then one G step (non-saturating loss), on shared coordinates."""
        assert self.D is not None and self.opt_d is not None
        self._plan_ahead(step)
        b = self.batch(step)
        g = step_generator(self.cfg.train.seed, step, stream=3, device=self.device)
        metrics = gan_step(
            self.G,
            self.D,
            self.opt_g,
            self.opt_d,
            b.coords,
            b.features,
            self.cfg.train,
            g,
            amp=self.cfg.train.amp == "on",
            shard=(self.world.rank, self.world.size),
            sync=self._sync,
            branches=self._branches,
        )
        if self.G_ema is not None:
            update_ema(self.G_ema, self.G, self.cfg.train.ema_beta)
        return metrics

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples: the moving average when ``train.ema_beta`` > 0, else G itself."""
        return self.G_ema if self.G_ema is not None else self.G

    def _sync(self, module: torch.nn.Module) -> None:
        distributed.average_gradients(module, self.world)

    def autodecoder_step(self, step: int) -> dict[str, float]:
        """One joint step on the decoder and the batch's latents (App. B.1)."""
        b = self.batch(step)
        loss, parts = self.G.loss(b.index.to(self.device), b.coords, b.features)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self._sync(self.G)
        self.opt_g.step()
        return {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}

    # -- bookkeeping ------------------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def state(self) -> dict[str, Any]:
        return {
            "config": to_dict(self.cfg),
            "model": self.cfg.train.model,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "coord_dim": self.coord_dim,
            "feature_dim": self.feature_dim,
            "grid_shape": list(self.grid_shape),
            "num_examples": len(self.data),
            "data": str(self.data_path),
            "G": self.G.state_dict(),
            "D": self.D.state_dict() if self.D is not None else None,
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "rng": {"torch": torch.get_rng_state()},
        }

    @property
    def snapshot_dir(self) -> Path:
        return self.out / "snapshots"

    def save_snapshot(self) -> Path:
        """The generator alone at this step (what sampling needs), for `nfd evaluate progress`."""
        state = self.state()
        keep = (
            "config",
            "model",
            "step",
            "train_seconds",
            "coord_dim",
            "feature_dim",
            "grid_shape",
            "num_examples",
            "data",
            "G",
            "G_ema",
        )
        path = self.snapshot_dir / f"step_{self.step:07d}.pt"
        ckpt.save(path, {k: state[k] for k in keep})
        return path

    def save(self, path: Path | None = None) -> Path:
        path = path or self.last_path
        ckpt.save(path, self.state())
        return path

    def restore(self, path: Path) -> None:
        data = ckpt.load(path, map_location=self.device)
        if (
            data["model"] != self.cfg.train.model
            or data["coord_dim"] != self.coord_dim
            or data["feature_dim"] != self.feature_dim
        ):
            raise NfdError(
                f"{path}: checkpoint is of another model/data ({data['model']}, d={data['coord_dim']}, "
                f"k={data['feature_dim']}) than this run ({self.cfg.train.model}, d={self.coord_dim}, "
                f"k={self.feature_dim})"
            )
        try:
            self.G.load_state_dict(data["G"])
            if self.G_ema is not None:
                if data.get("G_ema") is None:
                    raise KeyError("the checkpoint holds no G_ema (it was trained without train.ema_beta)")
                self.G_ema.load_state_dict(data["G_ema"])
            if self.D is not None:
                self.D.load_state_dict(data["D"])
                self.opt_d.load_state_dict(data["opt_d"])
            self.opt_g.load_state_dict(data["opt_g"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise NfdError(f"{path}: checkpoint does not fit this config ({str(e).splitlines()[0][:200]})") from None
        self._apply_optimiser_config()
        torch.set_rng_state(data["rng"]["torch"])
        self.step = int(data["step"])
        self.train_seconds = float(data.get("train_seconds", 0.0))

    def _apply_optimiser_config(self) -> None:
        """Give the restored optimisers this run's learning rates and betas, so the saved config is what trains.

        A restored Adam keeps the hyperparameters it was saved with; a resume with ``--set train.lr_g=...`` must
        either change them or refuse, and changing them is what a user resuming with a new rate asks for."""
        tc = self.cfg.train
        wanted = [(self.opt_g, [tc.lr_g] if tc.model == "gan" else [tc.lr_g, tc.autodecoder_lr_latent])]
        if self.opt_d is not None:
            wanted.append((self.opt_d, [tc.lr_d]))
        for opt, lrs in wanted:
            for group, lr in zip(opt.param_groups, lrs):
                old = (group["lr"], tuple(group["betas"]))
                group["lr"], group["betas"] = lr, (tc.beta1, tc.beta2)
                if old != (lr, (tc.beta1, tc.beta2)) and self.world.is_main:
                    tqdm.write(
                        f"nfd train: resumed optimiser now uses lr {lr:g}, betas ({tc.beta1:g}, "
                        f"{tc.beta2:g}) (checkpoint had lr {old[0]:g}, betas ({old[1][0]:g}, {old[1][1]:g}))"
                    )

    def fit(
        self, resume: bool = False, progress: bool = True, force: bool = False, stop: StopSignals | None = None
    ) -> Path:
        """Train to ``total_steps``; returns the final checkpoint ``out/model.pt``.

        The run folder is locked for the duration (one writer at a time). A fresh run refuses a folder that holds
        another run's outputs unless ``force`` (which deletes them first); a resume drops everything past the
        checkpoint's step (metrics rows, snapshots, previews, a stale ``model.pt``). SIGINT and SIGTERM finish the
        current step and write a checkpoint (:class:`Interrupted`); ``stop`` is a :class:`StopSignals` already
        installed by the caller (else fit installs one). In data-parallel training every rank runs
        this; only rank 0 writes files (config, metrics averaged over the ranks, previews, snapshots,
        checkpoints), and the ranks' weights are checked to be equal at the end.
        """
        lock = runfolder.locked(self.out) if self.world.is_main else contextlib.nullcontext()
        try:
            with lock, contextlib.nullcontext(stop) if stop is not None else StopSignals() as stop:
                return self._fit(resume, progress, force, stop)
        except OSError as e:  # a full disk while writing metrics, previews or the config: one line, with the file
            where = e.filename or self.out
            raise NfdError(
                f"{where}: cannot write ({e.strerror or e}); the last checkpoint is "
                f"{self.last_path if self.last_path.is_file() else 'not written yet'}"
            ) from None

    def _prepare_folder(self, resume: bool, force: bool) -> None:
        """Rank 0: clean the folder for this run and restore the checkpoint if resuming."""
        for p in runfolder.remove_temp_files(self.out):
            tqdm.write(f"nfd train: removed {p} (left by an interrupted write)")
        if resume and not self.last_path.is_file():
            tqdm.write(f"nfd train: no checkpoint at {self.last_path}; starting from step 0")
            resume, force = False, True  # whatever is there never reached a checkpoint
        if not resume:
            old = runfolder.existing_outputs(self.out)
            if old and not force:
                raise NfdError(
                    f"{self.out}: holds another run's outputs ({', '.join(old)}); pass --resume to "
                    "continue it or --force to delete them first"
                )
            runfolder.clear(self.out)
            return
        self.restore(self.last_path)
        stale = runfolder.remove_after(self.snapshot_dir, self.step) + runfolder.remove_after(
            self.out / "samples", self.step
        )
        if self.step < self.total_steps:
            stale += [p for p in [self.out / "model.pt"] if p.is_file()]
            (self.out / "model.pt").unlink(missing_ok=True)
        if stale:
            tqdm.write(f"nfd train: resuming at step {self.step}: removed {len(stale)} later output(s)")

    def _fit(self, resume: bool, progress: bool, force: bool, stop: StopSignals) -> Path:
        main = self.world.is_main
        if main:
            self._prepare_folder(resume, force)
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        elif resume and self.last_path.is_file():
            self.restore(self.last_path)
        gan = self.cfg.train.model == "gan"
        log = None
        if main:
            save_yaml(self.cfg, self.out / "config.yaml")
            log = MetricsLog(
                self.out / "metrics.tsv", METRIC_COLUMNS if gan else AD_METRIC_COLUMNS, start_step=self.step
            )
        tc = self.cfg.train
        self.G.train()
        if self.D is not None:
            self.D.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (progress and main),
            desc=f"train {self.cfg.name}",
            dynamic_ncols=True,
        )
        if gan and self.num_points and self.device.type == "cpu" and torch.get_num_threads() > 1:
            self._planner = ThreadPoolExecutor(1, thread_name_prefix="nfd-plan")
        if gan:
            points = self.num_points or self.all_coords.shape[0]
            self._branches = parallel_branches_for(
                tc, self.D, self.device, self.batch_size // self.world.size, points, self.world.size
            )
        try:
            loop_t0, loop_s0 = time.perf_counter(), self.train_seconds
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                metrics = self.gan_step(self.step) if gan else self.autodecoder_step(self.step)
                metrics["stop"] = float(stop.signum or 0)
                self.train_seconds = loop_s0 + (time.perf_counter() - loop_t0)
                metrics["over_budget"] = float(0 < tc.max_seconds <= self.train_seconds)
                metrics = distributed.average_metrics(metrics, self.world, self.device)
                stopping = metrics.pop("stop") > 0  # any rank signalled: all stop after this same step
                over_budget = metrics.pop("over_budget") > 0  # any rank's clock: all end after this same step
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    last = self.last_path if self.last_path.is_file() else "none written yet"
                    raise NfdError(
                        f"non-finite {', '.join(bad)} at step {self.step} "
                        f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); last good checkpoint: {last}"
                    )
                self.step += 1
                metrics["step_time"] = time.perf_counter() - t0
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k in ("loss_d", "loss_g", "loss")})
                if stopping:
                    if main:
                        log.write({"step": self.step, **metrics})
                        self.save()
                    raise Interrupted(stop.signum or signal.SIGTERM, self.step, self.last_path)
                if not main:
                    if over_budget:
                        break
                    continue
                log.write({"step": self.step, **metrics})
                if self.step % tc.sample_every == 0 or self.step == self.total_steps or over_budget:
                    self.preview()
                if tc.keep_every > 0 and self.step % tc.keep_every == 0:
                    self.save_snapshot()
                if self.step % tc.checkpoint_every == 0 and self.step < self.total_steps:
                    self.save()
                if over_budget:
                    tqdm.write(f"nfd train: wall-clock budget of {tc.max_seconds:g} s reached at step {self.step}")
                    break
        finally:
            if self._planner is not None:  # no side thread may outlive the loop (see StopSignals)
                self._planner.shutdown(wait=True, cancel_futures=True)
                self._planner, self._pending_plan = None, None
            if self._branches is not None:
                self._branches.close()
                self._branches = None
            bar.close()
            if log is not None:
                log.close()
        final = self.out / "model.pt"
        if self.world.active:
            drift = max(distributed.max_divergence(m, self.world) for m in (self.G, self.D) if m is not None)
            if drift > 0:
                raise NfdError(
                    f"the {self.world.size} training processes hold different weights at step {self.step} "
                    f"(largest difference {drift:.3g}); nothing saved"
                )
        if main:
            self.save()
            self.save(final)
        return final

    def preview(self) -> None:
        """Save the fixed-latent samples of this step as a PNG grid (images, or projections of 3D shapes)."""
        from nfd.grid import grid_coords

        res = self.grid_shape[0]
        G = self.sampler
        was = G.training
        G.eval()
        coords = grid_coords(res, self.coord_dim, device=self.device)
        feats = G.evaluate(self.fixed_z, coords)
        G.train(was)
        vol = feats.reshape(feats.shape[0], *([res] * self.coord_dim), self.feature_dim).numpy()
        save_preview(vol, self.out / "samples" / f"step_{self.step:07d}.png", title=f"{self.cfg.name} step {self.step}")


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after finishing a step and writing its checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal.Signals(signum).name} after step {step}")
        self.signum, self.step, self.checkpoint = int(signum), step, checkpoint


class StopSignals:
    """While training, the first SIGINT/SIGTERM only asks the loop to stop after the current step.

    Raising inside a step (Python's default for SIGINT) could leave the KD-tree's worker threads running while the
    interpreter shuts down, which segfaults, and lose up to ``checkpoint_every`` steps; a second signal restores
    the default behaviour, for a user who wants out now. Only the main thread can install handlers. ``nfd train``
    installs it before building the trainer: a SIGINT during start-up would otherwise raise KeyboardInterrupt
    inside whatever runs then, where it can be lost (Python only prints an exception raised in a finaliser or a
    callback), and a run so interrupted was seen to train on to the end."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signum = signum
        tqdm.write(f"nfd train: {signal.Signals(signum).name}: stopping after this step (again to stop now)")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
