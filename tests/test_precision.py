"""train.amp: 'auto' is bf16 exactly where the hardware multiplies bf16 natively, and the run records the outcome."""

from __future__ import annotations

import pytest
import torch
import yaml

from nfd.presets import resolve
from nfd.training.precision import native_bf16, resolve_amp
from nfd.training.trainer import Trainer


def _cpu_flags(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize(
    "amx, avx512_bf16, unit",
    [(False, False, ""), (False, True, "AVX-512 BF16"), (True, False, "AMX"), (True, True, "AMX")],
)
def test_auto_follows_the_cpu_flags(monkeypatch, amx, avx512_bf16, unit):
    """The CPU's flags are stubbed (the machine running the tests has one fixed set): 'auto' is 'on' with either
    native unit and 'off' without; 'on' / 'off' are kept whatever the hardware."""
    _cpu_flags(monkeypatch, amx, avx512_bf16)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) == unit
    used, why = resolve_amp("auto", cpu)
    assert used == ("on" if unit else "off") and (unit in why if unit else "no native bf16" in why)
    assert resolve_amp("on", cpu)[0] == "on" and resolve_amp("off", cpu)[0] == "off"


def test_auto_matches_what_torch_reports_here():
    """Unstubbed, on this machine: the same answer as torch's own CPU capability report."""
    caps = torch._C._cpu._get_cpu_capability()
    expected = "on" if (caps.get("amx_tile") or caps.get("avx512_bf16")) else "off"
    assert resolve_amp("auto", torch.device("cpu"))[0] == expected


@pytest.mark.parametrize("native, model", [(False, "gan"), (True, "gan"), (True, "autodecoder")])
def test_the_run_records_the_precision_it_used(monkeypatch, images_h5, tmp_path, native, model):
    """The saved config says 'on' or 'off', never 'auto', so a run states how it trained; the auto-decoder's step
    has no bf16 path, so it records 'off' even where bf16 is native."""
    _cpu_flags(monkeypatch, False, native)
    sets = ["steps=1", "train.checkpoint_every=1000", "train.sample_every=1000", f"train.model={model}"]
    cfg = resolve("tiny", None, sets)
    assert cfg.train.amp == "auto"
    Trainer(cfg, images_h5, tmp_path / "run").fit(progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["amp"] == ("on" if native and model == "gan" else "off")
