"""The generator's one-token decoding step, compiled with TorchScript (CPU).

:class:`melodia.model.lean.LeanLlama` decodes with about 25 tensor operations per layer. At
batch 1 on a laptop CPU each of them is a few microseconds of work, and calling it from
Python costs about as much again (interpreter, argument parsing). This module holds the same
step as TorchScript modules, run by TorchScript's interpreter instead of Python's: about half
the time per token, identical logits (``tests/test_generate.py`` checks both; measurements in
docs/benchmarks.md, "The TorchScript step").

TorchScript is deprecated in torch (still present and working in 2.13). :func:`script_step`
returns ``None`` when scripting fails for any reason; LeanLlama then keeps its Python step,
which gives the same numbers, slower. ``MELODIA_JIT=0`` in the environment turns it off.

(No ``from __future__ import annotations`` here: TorchScript reads the annotations. torch is
imported at the top because the classes below subclass its modules; LeanLlama imports this
module only when it builds a CPU step.)

Example: ``step = script_step([Layer(qkv, o, gu, down, 5, 5, 64, 640)], head)``
"""
import warnings
from typing import List, Optional  # noqa: UP035 - TorchScript reads these annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Module):
    """``x @ weight.T`` with an fp32 weight (the small matrices, or when FBGEMM is missing)."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class Bf16Linear(nn.Module):
    """``x @ weight.T`` with a bf16 weight: bf16 product, fp32 in and out (CPUs with bf16 units)."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.register_buffer("weight", weight.to(torch.bfloat16).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight).float()


def fp16_linear(weight: Tensor) -> nn.Module:
    """FBGEMM's fp16-storage, fp32-arithmetic linear layer for ``weight`` [out, in]."""
    m = torch.ao.nn.quantized.dynamic.Linear(weight.shape[1], weight.shape[0], bias_=False, dtype=torch.float16)
    m.set_weight_bias(weight.contiguous(), None)
    return m


def as_function(m: nn.Module):
    """The module's matrix product as a plain callable for LeanLlama's Python path (same weights)."""
    if isinstance(m, Linear):
        w = m.weight
        return lambda x: F.linear(x, w)
    if isinstance(m, Bf16Linear):
        wb = m.weight
        return lambda x: F.linear(x.to(torch.bfloat16), wb).float()
    packed = m._packed_params._packed_params
    op = torch.ops.quantized.linear_dynamic_fp16.default
    op = getattr(op, "_op", op)  # the C++ callable: skips Python-side dispatch checks
    return lambda x: op(x, packed)


class Layer(nn.Module):
    """One decoder layer for one new token per row, as LeanLlama.step does it (see its docstring)."""

    def __init__(self, qkv: nn.Module, o: nn.Module, gu: nn.Module, down: nn.Module,
                 n_head: int, n_kv: int, head_dim: int, d_ff: int):
        super().__init__()
        self.qkv, self.o, self.gu, self.down = qkv, o, gu, down
        self.n_head, self.n_kv, self.head_dim, self.d_ff = n_head, n_kv, head_dim, d_ff

    def forward(self, x: Tensor, cis: Tensor, kc: Tensor, vc: Tensor, pos: int) -> Tensor:
        B = x.size(0)
        H, KV, hd, ff = self.n_head, self.n_kv, self.head_dim, self.d_ff
        nq = H * hd
        nqk = nq + KV * hd
        qkv = self.qkv(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))
        torch.view_as_complex(qkv[:, :nqk].view(B, H + KV, hd // 2, 2)).mul_(cis)
        kc[:, :, pos] = qkv[:, nq:nqk].view(B, KV, hd)
        vc[:, :, pos] = qkv[:, nqk:].view(B, KV, hd)
        end = pos + 1
        scores = qkv[:, :nq].view(B, KV, H // KV, hd) @ kc[:, :, :end].transpose(-1, -2)
        a = torch.softmax(scores, dim=-1) @ vc[:, :, :end]
        x = x + self.o(a.view(B, nq))
        gu = self.gu(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))
        return x + self.down(F.silu(gu[:, :ff]) * gu[:, ff:])


class Step(nn.Module):
    """All layers and the output head: embedded token rows [B, d+1] → logits [B, vocab]."""

    def __init__(self, layers: List[Layer], head: nn.Module):  # noqa: UP006
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = head

    def forward(self, x: Tensor, cis: Tensor, kcs: List[Tensor], vcs: List[Tensor],  # noqa: UP006
                pos: int) -> Tensor:
        i = 0
        for layer in self.layers:
            x = layer(x, cis, kcs[i], vcs[i], pos)
            i += 1
        return self.head(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))


def script_step(layers: List[Layer], head: nn.Module) -> Optional[torch.jit.ScriptModule]:  # noqa: UP006, UP045
    """The :class:`Step` of these layers, scripted and frozen; ``None`` where TorchScript fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice: the fallback covers it
            return torch.jit.freeze(torch.jit.script(Step(layers, head).eval()))
    except Exception:  # TorchScript missing, changed, or unable to read this file's source
        return None
