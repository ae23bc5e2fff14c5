"""How the network's arithmetic runs on a device: bfloat16 autocast and the channels-last memory layout.

One owner for the choice, so training, validation and `malenia segment` run the same arithmetic.

- bfloat16 autocast (weights stay float32; torch.autocast runs convolutions and matrix products in bfloat16,
  reductions and the losses in float32). "auto" turns it on where the device computes bfloat16 natively: CUDA
  GPUs that support it, and CPUs with bfloat16 instructions (AVX512-BF16 or AMX-BF16). Elsewhere bfloat16 is
  emulated, slower than float32, so "auto" keeps float32 there. oneDNN's own check
  (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) is not that test: it also says yes on plain AVX512, where it
  emulates. On such a CPU (a 2-core Intel Xeon without AVX512-BF16) a compact training step at batch 2 took
  2.30 s in bfloat16 against 1.47 s in float32 (docs/training.md, ninth round).
- channels-last 3D (N, D, H, W, C in memory) on CPU: oneDNN's convolutions use that layout internally, so a
  channels-first tensor is reordered at every layer. Measured on this project's 2-core AVX512 machine, the
  compact backbone's forward and backward at batch 2, 64^3: 0.72 s float32, 0.51 s channels-last, 0.41 s
  bfloat16, 0.29 s both (docs/training.md, eighth round). On CUDA the layout is left as it is (not measured).
- cuDNN's autotuner on CUDA (`torch.backends.cudnn.benchmark`, as nnU-Net sets it): training patches and
  inference windows have one shape, so each convolution's fastest algorithm is timed once and kept. An H200 ran
  a compact step at batch 16 in 0.170 s without it and 0.127 s with it (5.90 -> 7.87 steps/s, the second under
  a heavier CPU load; docs/training.md, twenty-eighth round).
- `torch.compile` over the network's fixed-shape parts (opt-in, `--compile`): an H200 step at batch 16 is bound by
  the launches of hundreds of small kernels, not by arithmetic (docs/training.md), and TorchInductor fuses the
  normalisations, activations and element-wise work between convolutions into fewer kernels. The matching and the
  losses stay eager: their shapes follow the number of lesions in a batch, which would recompile at every step.
  Off by default, because on an H200 it did not pay for compact at batch 16: 7.62 steps/s compiled against 7.87
  eager, after 76 s of compiling (docs/training.md, twenty-eighth round); what stays eager (the matching, the
  losses, their backward, the optimizer) keeps it latency-bound. Kept for larger networks and for measuring again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from malenia.errors import InputError

if TYPE_CHECKING:
    import torch

# The choices of every --precision option and of SegmentOptions.precision. torch is imported where it is used, so
# that the command-line parsers and SegmentOptions can read this without loading it.
PRECISIONS = ("auto", "bf16", "fp32")
# torch.compile's backends a --compile may name: inductor generates fused kernels (the point); eager and aot_eager
# trace the same graphs without generating code (for checking that a network compiles, quickly, on a CPU).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
# MaleniaNet's parts whose input shapes are fixed by the patch (or inference window) and the token count.
COMPILED_PARTS = ("stem", "backbone", "decoder", "heads", "dense")


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 convolutions natively (not emulated)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_bfloat16_instructions(cpu_capabilities())
    return False


def cpu_capabilities() -> dict:
    """The CPU's instruction-set flags as torch reports them ({} where this torch cannot say)."""
    import torch

    try:
        return dict(torch.cpu.get_capabilities())
    except (AttributeError, RuntimeError):
        return {}


def cpu_bfloat16_instructions(capabilities: dict) -> bool:
    """Whether a CPU with these flags (cpu_capabilities) computes bfloat16 in hardware, not emulated."""
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


@dataclass(frozen=True)
class Precision:
    """The resolved arithmetic for one device."""

    device_type: str
    bfloat16: bool
    channels_last: bool

    @property
    def name(self) -> str:
        return ("bf16" if self.bfloat16 else "fp32") + (" channels-last" if self.channels_last else "")

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.bfloat16)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Puts the convolution weights in the layout the inputs will have (in place; returns the model); on CUDA,
        lets cuDNN time its convolution algorithms for the fixed input shape."""
        import torch

        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        return model

    def prepare_input(self, image: torch.Tensor) -> torch.Tensor:
        """[B, C, D, H, W] in the chosen layout (the same values)."""
        import torch

        if self.channels_last and image.ndim == 5:
            return image.contiguous(memory_format=torch.channels_last_3d)
        return image


def compile_network(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """Compiles MaleniaNet's fixed-shape parts in place (nn.Module.compile: the parameters, their names in the
    state dict and the optimizer's references stay as they are); returns the parts compiled."""
    if backend not in COMPILE_BACKENDS:
        raise InputError(f"compile backend must be one of {', '.join(COMPILE_BACKENDS)}, got {backend!r}")
    done = []
    for name in COMPILED_PARTS:
        part = getattr(model, name, None)
        if part is not None:
            part.compile(backend=backend)
            done.append(name)
    return done


@contextlib.contextmanager
def standard_layout(model: torch.nn.Module):
    """The model in the standard (channels-first) layout for the duration, then back as it was.

    safetensors' `save_model` finds aliased weights through `tensor.view(-1)`, which a channels-last weight
    refuses; the parameters stay the same objects (an optimizer keeps its references)."""
    import torch

    channels_last = any(p.ndim == 5 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last_3d)
                        for p in model.parameters())
    if not channels_last:
        yield model
        return
    model.to(memory_format=torch.contiguous_format)
    try:
        yield model
    finally:
        model.to(memory_format=torch.channels_last_3d)


def resolve_precision(precision: str, device: torch.device | str) -> Precision:
    """"auto": bfloat16 where native, channels-last on CPU; "bf16" / "fp32": forced (channels-last on CPU still)."""
    import torch

    device = torch.device(device)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    bf16 = native_bfloat16(device) if precision == "auto" else precision == "bf16"
    return Precision(device.type, bf16, channels_last=device.type == "cpu")
