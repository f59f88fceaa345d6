"""The precision of training: bf16 autocast where the hardware multiplies bf16 natively (``train.amp``)."""

from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> str:
    """What multiplies bf16 natively on ``device`` ('' when nothing does and bf16 would be emulated).

    On the CPU these are the AVX-512 BF16 instructions and AMX tiles (oneDNN uses either; without them bf16 products
    are emulated, 12x slower than float32 on an AVX2-only AMD EPYC); on CUDA, a GPU with bf16 tensor cores."""
    if device.type == "cuda":
        return "CUDA bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else ""
    if device.type == "cpu":
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            return "AMX"
        if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            return "AVX-512 BF16"
    return ""


def resolve_amp(setting: str, device: torch.device) -> tuple[str, str]:
    """('on' or 'off', why) for a ``train.amp`` setting on ``device``: 'auto' is 'on' exactly where
    :func:`native_bf16` finds native bf16."""
    if setting != "auto":
        return setting, "as configured"
    unit = native_bf16(device)
    if unit:
        return "on", f"{device.type} multiplies bf16 natively ({unit})"
    return "off", f"no native bf16 on this {device.type}"
