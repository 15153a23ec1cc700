"""The lean forward pass: a ``transformers.LlamaForCausalLM`` rewritten for sampling.

The weights are read once into plain tensors (fused QKV, fused gate/up; the RMSNorm weights
folded into the matrix that follows each norm; q/k rows permuted so RoPE becomes one complex
multiply), the key/value cache is pre-allocated (``[layers, batch, kv_heads, len, head_dim]``),
the prompt is prefilled in one pass, and every later step runs one token per row through about
18 tensor operations per layer. On CPU the larger matrices are stored as fp16 and multiplied by
FBGEMM's fp16 GEMM (fp32 arithmetic, half the weight traffic); ``weights="fp32"`` is exact.
The logits equal the HF model's (``tests/test_generate.py``). Measurements: docs/benchmarks.md.

Example:
    >>> net = LeanLlama(model); net.reset(batch=1, length=256); logits = net.forward(ids)
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, BadModelError
from .precision import DECODE_MIN_SPEEDUP, bf16_speedup, has_fbgemm_fp16

if TYPE_CHECKING:  # pragma: no cover - torch is heavy: the methods import it when they run
    import torch

__all__ = ["LeanLlama", "FP16_MIN_ELEMENTS"]

FP16_MIN_ELEMENTS = 1 << 16  # CPU: matrices at least this big are stored fp16 (see LeanLlama)


class LeanLlama:
    """Inference-only forward pass of a ``LlamaForCausalLM`` with a pre-allocated KV cache.

    ``weights``: ``"auto"`` (on CPU: fp16 storage with fp32 arithmetic via FBGEMM where the
    build has it, or bf16 where :func:`melodia.model.precision.bf16_speedup`'s cached probe finds
    bf16 products faster, as on CPUs with AMX; fp32 elsewhere), ``"fp32"`` (exact), ``"fp16"``
    or ``"bf16"`` (on CPU, as with fp16, only the large matrices). Activations
    and the KV cache are fp32. ``jit`` (default: on unless ``MELODIA_JIT=0``): on the CPU, run
    :meth:`step` as TorchScript (:mod:`melodia.model.leanstep`), the same operations without
    Python's per-call cost; ``net.jit`` says whether it is in use (it falls back silently).

    How the step stays lean (≈18 tensor operations per layer):

    * RMSNorm's weight (and its ``sqrt(d)``) is folded into the matrix after each norm, and
      the residual stream carries one extra constant component ``sqrt(d·eps)`` that every
      matrix ignores (a zero column; the matrices writing to the stream have a zero row), so
      the norm is ``x / ||x||`` — two operations, eps included exactly;
    * q and k rows are permuted from HF's half-split layout to interleaved pairs, so RoPE is one
      in-place complex multiply; q rows also carry the ``1/sqrt(head_dim)`` attention scale;
    * Q, K, V are one matrix, gate and up another; attention for one query is two matmuls and
      a softmax, grouped-query heads by broadcasting.

    Example:
        >>> net = LeanLlama(model); net.reset(batch=1, length=256)
        >>> logits = net.forward(torch.tensor([[1, 2, 3]]))     # prefill → [1, vocab]
        >>> logits = net.step(torch.tensor([7]))                # one more token
    """

    def __init__(self, model: Any, device: str = "cpu", weights: str = "auto", jit: bool | None = None):
        import torch  # heavy: loaded on first use

        cfg = model.config
        theta = _check_config(cfg, weights)
        self.device = torch.device(device)
        if weights == "auto":  # CPU: bf16 only where the probe finds it faster (bf16 units)
            weights = "fp16" if self.device.type == "cpu" and has_fbgemm_fp16() else "fp32"
            if self.device.type == "cpu" and bf16_speedup("decode", cfg.hidden_size) >= DECODE_MIN_SPEEDUP:
                weights = "bf16"
        self.weights = weights
        self.n_layer = cfg.num_hidden_layers
        self.n_head = H = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or H
        self.d = cfg.hidden_size
        self.hd = hd = getattr(cfg, "head_dim", None) or self.d // H
        self.d_ff = int(cfg.intermediate_size)
        self.window = int(getattr(cfg, "max_position_embeddings", 2048))
        self.vocab_size = int(cfg.vocab_size)
        self.rope_theta = theta
        mats, head = self._fold(model, float(cfg.rms_norm_eps))
        # On the CPU the one-token step also runs as TorchScript (melodia/model/leanstep.py): the
        # same operations without Python's per-call cost, about half the time of a step at batch 1.
        if jit is None:
            jit = os.environ.get("MELODIA_JIT", "1") != "0"
        self._jit = None
        if self.device.type == "cpu" and (weights in ("fp32", "bf16") or weights == "fp16" and has_fbgemm_fp16()):
            self._cpu_matmuls(mats, head, jit)
        else:
            self.layers = [tuple(self._linear(w) for w in ws) for ws in mats]
            self.head = self._linear(head)
        self.jit = self._jit is not None
        self._inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.cis = self._rope_table(self.window)
        self.kc = self.vc = None
        self._kv: list = []
        self.batch = self.capacity = self.pos = 0

    def _fold(self, model: Any, eps: float) -> "tuple[list[tuple], torch.Tensor]":
        """The folded fp32 matrices (qkv, o, gate/up, down) per layer and the output head; sets
        ``self.emb`` (the embedding with the constant stream component)."""
        import torch  # heavy: loaded on first use

        H, KV, hd, d = self.n_head, self.n_kv, self.hd, self.d
        root_d = d ** 0.5

        def f32(t: "torch.Tensor") -> "torch.Tensor":
            return t.detach().to("cpu", torch.float32)

        def reads_stream(w: "torch.Tensor") -> "torch.Tensor":  # ignore the constant component
            return torch.cat([w, w.new_zeros(w.shape[0], 1)], 1)

        def writes_stream(w: "torch.Tensor") -> "torch.Tensor":  # leave it unchanged
            return torch.cat([w, w.new_zeros(1, w.shape[1])], 0)

        perm = torch.arange(hd).view(2, hd // 2).t().reshape(-1)  # half-split → interleaved pairs

        def rope_rows(w: "torch.Tensor", heads: int) -> "torch.Tensor":
            return w.reshape(heads, hd, -1)[:, perm].reshape(heads * hd, -1)

        inner = model.model
        mats = []
        for layer in inner.layers:
            at, mlp = layer.self_attn, layer.mlp
            ln1 = f32(layer.input_layernorm.weight) * root_d
            ln2 = f32(layer.post_attention_layernorm.weight) * root_d
            wqkv = torch.cat([rope_rows(f32(at.q_proj.weight), H) * hd ** -0.5,
                              rope_rows(f32(at.k_proj.weight), KV), f32(at.v_proj.weight)]) * ln1
            wgu = torch.cat([f32(mlp.gate_proj.weight), f32(mlp.up_proj.weight)]) * ln2
            mats.append((reads_stream(wqkv), writes_stream(f32(at.o_proj.weight)),
                         reads_stream(wgu), writes_stream(f32(mlp.down_proj.weight))))
        emb = f32(model.get_input_embeddings().weight)
        self.emb = torch.cat([emb, emb.new_full((emb.shape[0], 1), (d * eps) ** 0.5)], 1).to(self.device)
        head = reads_stream(f32(model.get_output_embeddings().weight) * (f32(inner.norm.weight) * root_d))
        return mats, head

    def _cpu_matmuls(self, mats: list[tuple], head: "torch.Tensor", jit: bool) -> None:
        """CPU: the matrices as leanstep modules (fp16 FBGEMM for the large ones), their plain
        callables for the Python step, and the TorchScript step when ``jit`` (None if it fails)."""
        from . import leanstep  # heavy: defines torch modules, so importing it imports torch

        weights = self.weights

        def module(w: "torch.Tensor"):
            # FBGEMM: fp16 storage, fp32 arithmetic (half the memory traffic of fp32); its
            # call costs ~10-30 µs more than F.linear, so small matrices stay fp32 (bf16 too)
            if w.numel() < FP16_MIN_ELEMENTS or weights == "fp32":
                return leanstep.Linear(w.contiguous())
            return leanstep.fp16_linear(w) if weights == "fp16" else leanstep.Bf16Linear(w)

        mods = [tuple(module(w) for w in ws) for ws in mats]
        head_mod = module(head)
        self.layers = [tuple(leanstep.as_function(m) for m in ms) for ms in mods]
        self.head = leanstep.as_function(head_mod)
        if jit:
            self._jit = leanstep.script_step(
                [leanstep.Layer(*ms, self.n_head, self.n_kv, self.hd, self.d_ff) for ms in mods], head_mod)

    def _linear(self, w: "torch.Tensor"):
        import torch
        import torch.nn.functional as F

        if self.weights in ("fp16", "bf16"):  # GPU, or a CPU without FBGEMM for fp16
            dt = torch.float16 if self.weights == "fp16" else torch.bfloat16
            wl = w.to(self.device, dt).contiguous()
            return lambda x: F.linear(x.to(dt), wl).float()
        wt = w.to(self.device, torch.float32).contiguous()
        return lambda x: F.linear(x, wt)

    def _rope_table(self, length: int) -> "torch.Tensor":
        import torch

        fr = torch.outer(torch.arange(length, dtype=torch.float64), self._inv_freq)
        return torch.polar(torch.ones_like(fr), fr).to(torch.complex64).to(self.device)

    def reset(self, batch: int, length: int) -> None:
        """Allocate (or reuse) the KV cache for ``batch`` rows of up to ``length`` tokens.

        Example: ``net.reset(batch=8, length=1024)``
        """
        import torch

        shape = (self.n_layer, batch, self.n_kv, length, self.hd)
        if self.kc is None or tuple(self.kc.shape) != shape:
            self.kc = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.vc = torch.empty(shape, dtype=torch.float32, device=self.device)
            self._kv = [(self.kc[i], self.vc[i]) for i in range(self.n_layer)]
            self._kcs, self._vcs = [k for k, _ in self._kv], [v for _, v in self._kv]
        if self.cis.shape[0] < length:
            self.cis = self._rope_table(length)
        self.batch, self.capacity, self.pos = batch, length, 0

    def forward(self, ids: "torch.Tensor", start: int = 0) -> "torch.Tensor":
        """Prefill: logits [rows, vocab] after ``ids`` ([rows, T]); the cache then holds T tokens.

        (With ``start == self.pos`` and T = 1 this is one :meth:`step`.)

        Example: ``logits = net.forward(torch.tensor([[1, 5, 9]]))``
        """
        import torch
        import torch.nn.functional as F

        B, T = ids.shape
        if T == 1 and start > 0:
            return self.step(ids.view(-1))
        if start != 0:
            raise ValueError("forward: prefill starts at 0; later steps take one token")
        if T > self.capacity or B != self.batch:
            raise ValueError(f"forward: the cache holds {self.capacity} tokens x {self.batch} rows")
        H, KV, hd = self.n_head, self.n_kv, self.hd
        nq, nqk = H * hd, (H + KV) * hd
        x = F.embedding(ids.to(self.device), self.emb)                      # [B, T, d+1]
        cis = self.cis[:T].view(T, 1, hd // 2)
        for (wqkv, wo, wgu, wd), (kc, vc) in zip(self.layers, self._kv):
            qkv = wqkv(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))  # [B, T, (H+2KV)·hd]
            torch.view_as_complex(qkv[..., :nqk].reshape(B, T, H + KV, hd // 2, 2)).mul_(cis)
            qkv4 = qkv.view(B, T, H + 2 * KV, hd).transpose(1, 2)            # [B, heads, T, hd]
            kc[:, :, :T] = qkv4[:, H:H + KV]
            vc[:, :, :T] = qkv4[:, H + KV:]
            a = F.scaled_dot_product_attention(qkv4[:, :H], kc[:, :, :T], vc[:, :, :T], is_causal=True,
                                               enable_gqa=H != KV, scale=1.0)
            x = x + wo(a.transpose(1, 2).reshape(B, T, nq))
            gu = wgu(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))
            x = x + wd(F.silu(gu[..., :self.d_ff]) * gu[..., self.d_ff:])
        self.pos = T
        x = x[:, -1]
        return self.head(x / torch.linalg.vector_norm(x, dim=-1, keepdim=True))

    def step(self, ids: "torch.Tensor") -> "torch.Tensor":
        """One decoding step: ``ids`` [rows] at position ``self.pos`` → logits [rows, vocab].

        Example: ``logits = net.step(torch.tensor([42]))``
        """
        import torch
        import torch.nn.functional as F

        B = ids.shape[0]
        pos = self.pos
        if pos >= self.capacity or B != self.batch:
            raise ValueError(f"step: the cache holds {self.capacity} tokens x {self.batch} rows")
        H, KV, hd, ff = self.n_head, self.n_kv, self.hd, self.d_ff
        nq, nqk = H * hd, (H + KV) * hd
        split = (nq, KV * hd, KV * hd)
        end = pos + 1
        norm = torch.linalg.vector_norm
        x = self.emb.index_select(0, ids.to(self.device))                   # [B, d+1]
        cis = self.cis[pos]
        if self._jit is not None:  # the same operations as below, in TorchScript
            self.pos = end
            return self._jit(x, cis, self._kcs, self._vcs, pos)
        for (wqkv, wo, wgu, wd), (kc, vc) in zip(self.layers, self._kv):
            qkv = wqkv(x / norm(x, dim=-1, keepdim=True))                   # [B, (H+2KV)·hd]
            torch.view_as_complex(qkv[:, :nqk].view(B, H + KV, hd // 2, 2)).mul_(cis)
            q, k, v = qkv.split_with_sizes(split, 1)
            kc[:, :, pos] = k.view(B, KV, hd)
            vc[:, :, pos] = v.view(B, KV, hd)
            # one query per row: two matmuls and a softmax; grouped heads by broadcasting
            a = torch.softmax(q.view(B, KV, H // KV, hd) @ kc[:, :, :end].transpose(-1, -2), dim=-1) @ vc[:, :, :end]
            x += wo(a.view(B, nq))
            gu = wgu(x / norm(x, dim=-1, keepdim=True))
            g = F.silu(gu[:, :ff], inplace=True)
            x += wd(g.mul_(gu[:, ff:]))
        self.pos = end
        return self.head(x / norm(x, dim=-1, keepdim=True))


def _check_config(cfg: Any, weights: str) -> float:
    """Raise :class:`BadModelError` for a model the lean pass cannot run (or BadInputError for
    ``weights``); return the RoPE theta."""
    if getattr(cfg, "model_type", None) != "llama":
        raise BadModelError(f"the generator needs a Llama model, got model_type {getattr(cfg, 'model_type', None)!r}")
    rope = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise BadModelError(f"RoPE type {rope_type!r} is not supported by the generator (only 'default')")
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", None)) or 10000.0)
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "attention_bias", False) \
            or getattr(cfg, "mlp_bias", False):
        raise BadModelError("the generator supports Llama models with SiLU and no attention or MLP biases")
    if weights not in ("auto", "fp32", "fp16", "bf16"):
        raise BadInputError(f"weights {weights!r}: use auto, fp32, fp16 or bf16")
    return theta
