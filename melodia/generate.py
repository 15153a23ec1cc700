"""Stage 5: a trained model → new music, fast, and always well-formed.

Three parts, top to bottom:

* :class:`LeanLlama` — the forward pass of a ``transformers.LlamaForCausalLM`` rewritten for
  sampling. The weights are read once into plain tensors (fused QKV, fused gate/up; the RMSNorm
  weights folded into the matrix that follows each norm; q/k rows permuted so RoPE becomes one
  complex multiply), the key/value cache is pre-allocated (``[layers, batch, kv_heads, len,
  head_dim]``), the prompt is prefilled in one pass, and every later step runs one token per row
  through about 18 tensor operations per layer (HF's module stack runs several times more, and
  grows its cache by concatenation). On CPU the larger matrices are stored as fp16 and
  multiplied by FBGEMM's fp16 GEMM (fp32 arithmetic, half the weight traffic; the logits stay
  within ~1e-3 of fp32); ``weights="fp32"`` is exact. When the cache is full (the model's
  ``max_position_embeddings``), the controls and the most recent half of the sequence are
  prefilled again, so long pieces work. The logits equal the HF model's (tested).
* The **grammar**: a state machine over MidiTok's REMI token types that says, before every
  sampling step, which ids may legally follow. Every sequence therefore decodes with zero
  MidiTok token errors and ends after exactly the requested number of bars (see "Grammar").
* :class:`Generator` — the conditioning prefix (mood, key, tags), forced opening tokens (bar,
  meter, tempo), classifier-free guidance, temperature / top-k / top-p sampling with a seeded
  ``torch.Generator``, ``n`` variations as one batch, and continuation of a MIDI file.

Grammar
-------
The state of a sequence is: the type of the last REMI token (the *phase*), the bar number, the
position inside the bar, the current program and the pitches already started at the current
position (per program). A token may follow when:

==============  ===========================================================================
after           may come
==============  ===========================================================================
(start)         ``Bar`` (then the forced opening: ``TimeSig_<meter>``, ``Position_0``, ``Tempo``)
``Bar``         ``TimeSig_<meter>`` (the requested meter, every bar; no meter changes)
``TimeSig``     ``Position_p`` (any p below the bar length), ``Bar`` (an empty bar)
``Position_p``  ``Program`` (an allowed instrument)
``Tempo``       ``Program``, ``Position_q`` (q > p), ``Bar``
``Program``     ``Pitch`` (``PitchDrum`` for drums) not yet started at this position by that program
``Pitch``       ``Velocity``
``Velocity``    ``Duration`` that ends at or before the end of the last requested bar
``Duration``    ``Program``, ``Position_q`` (q > p), ``Bar`` (if bars remain), ``EOS`` (in the last bar)
==============  ===========================================================================

``Bar`` is refused once the requested bars have started and ``EOS`` is allowed only in the last
bar after a complete note, so the decoded MIDI has exactly the requested bars: its last bar holds
a note onset and no note ends after it. Tempo appears once, in the opening (no tempo changes).
At most :data:`MAX_ONSETS` notes per program start at one position (so a ``Program`` token always
has a free pitch). A BPE id is legal when its whole base-token sequence is legal from the current
state, token by token. To make that cheap, each id's base sequence is summarised once per (meter,
instruments) into arrays — first token type, first position before any bar, bars inside, longest
duration at the current position, latest end after an inner position, internal validity — so a
step's mask is a handful of numpy comparisons, cached per compact state (phase, position, bars
left, drum); pitches already started are removed by per-(program, pitch) index lists. When the
token budget (``max_tokens``) is nearly spent, a *finishing* mode allows only the shortest way
to a valid end (close the note, empty bars, one note, EOS), so even an untrained model ends well.

Example:
    >>> gen = Generator(model, tokenizer)
    >>> ids = gen.generate(GenerationConfig(bars=8, mood="calm", key="F major", n=2, seed=1))
    >>> scores = [tokenizer.decode(x) for x in ids]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Sequence

from .errors import BadInputError, BadModelError
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import symusic
    import torch

    from .tokenizer import MelodiaTokenizer

__all__ = [
    "GenerationConfig", "Generator", "LeanLlama", "generate_scores", "INSTRUMENTS",
    "DEFAULT_PROGRAMS", "MAX_ONSETS", "parse_meter", "resolve_instruments",
]

MAX_BARS = 64
MAX_N = 16
MAX_SECTIONS = 8        # letters of a form
MAX_ONSETS = 8           # notes one program may start at one position (a two-hand chord)
FP16_MIN_ELEMENTS = 1 << 16  # CPU: matrices at least this big are stored fp16 (see LeanLlama)
DEFAULT_PROGRAMS = (0, 1)  # melody + accompaniment on two piano programs, for a model that names none
# A model directory may name its own default instrument set in melodia.json ("default_programs"):
# the shipped model's is POP909's layout (0 melody, 1 counter-melody, 2 piano accompaniment).

#: Instrument names → General MIDI programs (0-based; drums are -1, MidiTok's drum program).
INSTRUMENTS: dict[str, int] = {
    "piano": 0, "grand piano": 0, "acoustic piano": 0, "bright piano": 1, "electric grand": 2,
    "honky-tonk": 3, "electric piano": 4, "rhodes": 4, "harpsichord": 6, "clavinet": 7,
    "celesta": 8, "glockenspiel": 9, "music box": 10, "vibraphone": 11, "marimba": 12,
    "xylophone": 13, "bells": 14, "tubular bells": 14, "dulcimer": 15, "organ": 16,
    "rock organ": 18, "church organ": 19, "accordion": 21, "harmonica": 22,
    "guitar": 24, "nylon guitar": 24, "classical guitar": 24, "acoustic guitar": 25,
    "steel guitar": 25, "jazz guitar": 26, "electric guitar": 27, "overdriven guitar": 29,
    "distortion guitar": 30, "bass": 33, "acoustic bass": 32, "electric bass": 33,
    "fretless bass": 35, "slap bass": 36, "synth bass": 38, "violin": 40, "viola": 41,
    "cello": 42, "contrabass": 43, "double bass": 43, "tremolo strings": 44, "pizzicato": 45,
    "harp": 46, "timpani": 47, "strings": 48, "string ensemble": 48, "synth strings": 50,
    "choir": 52, "voice": 53, "trumpet": 56, "trombone": 57, "tuba": 58, "horn": 60,
    "french horn": 60, "brass": 61, "synth brass": 62, "soprano sax": 64, "sax": 65,
    "saxophone": 65, "alto sax": 65, "tenor sax": 66, "baritone sax": 67, "oboe": 68,
    "english horn": 69, "bassoon": 70, "clarinet": 71, "piccolo": 72, "flute": 73,
    "recorder": 74, "pan flute": 75, "whistle": 78, "ocarina": 79, "lead": 80,
    "synth lead": 80, "square lead": 80, "saw lead": 81, "pad": 88, "synth pad": 89,
    "drums": -1, "drum kit": -1, "percussion": -1,
    "melody": 0, "accompaniment": 1,
}
_DEFAULT_NAMES = {"melody + accompaniment", "melody+accompaniment", "melody and accompaniment", "default"}


# =============================================================================== lean forward
class LeanLlama:
    """Inference-only forward pass of a ``LlamaForCausalLM`` with a pre-allocated KV cache.

    ``weights``: ``"auto"`` (fp16 storage with fp32 arithmetic via FBGEMM on CPU where the
    build has it, fp32 elsewhere), ``"fp32"`` (exact), ``"fp16"`` or ``"bf16"``. Activations
    and the KV cache are fp32. ``jit`` (default: on unless ``MELODIA_JIT=0``): on the CPU, run
    :meth:`step` as TorchScript (:mod:`melodia.leanstep`), the same operations without
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
        import torch

        cfg = model.config
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
        self.device = torch.device(device)
        if weights == "auto":
            weights = "fp16" if self.device.type == "cpu" and _has_fbgemm_fp16() else "fp32"
        self.weights = weights
        self.n_layer = cfg.num_hidden_layers
        self.n_head = H = cfg.num_attention_heads
        self.n_kv = KV = getattr(cfg, "num_key_value_heads", None) or H
        self.d = d = cfg.hidden_size
        self.hd = hd = getattr(cfg, "head_dim", None) or d // H
        self.d_ff = int(cfg.intermediate_size)
        self.window = int(getattr(cfg, "max_position_embeddings", 2048))
        self.vocab_size = int(cfg.vocab_size)
        self.rope_theta = theta
        eps = float(cfg.rms_norm_eps)
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
        # On the CPU the one-token step also runs as TorchScript (melodia/leanstep.py): the same
        # operations without Python's per-call cost, about half the time of a step at batch 1.
        if jit is None:
            import os

            jit = os.environ.get("MELODIA_JIT", "1") != "0"
        self._jit = None
        if self.device.type == "cpu" and (weights == "fp32" or weights == "fp16" and _has_fbgemm_fp16()):
            from . import leanstep

            def module(w: "torch.Tensor"):
                fp16 = weights == "fp16" and w.numel() >= FP16_MIN_ELEMENTS
                # FBGEMM: fp16 storage, fp32 arithmetic (half the memory traffic of fp32); its
                # call costs ~10-30 µs more than F.linear, so small matrices stay fp32
                return leanstep.fp16_linear(w) if fp16 else leanstep.Linear(w.contiguous())

            mods = [tuple(module(w) for w in ws) for ws in mats]
            head_mod = module(head)
            self.layers = [tuple(leanstep.as_function(m) for m in ms) for ms in mods]
            self.head = leanstep.as_function(head_mod)
            if jit:
                self._jit = leanstep.script_step(
                    [leanstep.Layer(*ms, H, KV, hd, self.d_ff) for ms in mods], head_mod)
        else:
            self.layers = [tuple(self._linear(w) for w in ws) for ws in mats]
            self.head = self._linear(head)
        self.jit = self._jit is not None
        self._inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.cis = self._rope_table(self.window)
        self.kc = self.vc = None
        self._kv: list = []
        self.batch = self.capacity = self.pos = 0

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


def _has_fbgemm_fp16() -> bool:
    import torch

    try:
        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "x86" not in torch.backends.quantized.supported_engines:
            return False
        w = torch.ops.quantized.linear_prepack_fp16(torch.ones(8, 8), None)
        y = torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 8), w)
        return bool(abs(float(y[0, 0]) - 8.0) < 1e-3)
    except Exception:  # op missing in this build
        return False


# =============================================================================== grammar
# base token type codes
BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, EOS_T, OTHER, START, CHORD = range(13)
_NCODES = 16  # size of the per-type lookup arrays
_TYPE_CODE = {"Bar": BAR, "TimeSig": TSIG, "Position": POS, "Tempo": TEMPO, "Program": PROG,
              "Pitch": PITCH, "PitchDrum": DRUM, "Velocity": VEL, "Duration": DUR}
_NEXT = {  # type transitions inside a sequence (bar count, EOS and values checked elsewhere)
    BAR: {TSIG}, TSIG: {POS, BAR}, POS: {PROG, CHORD}, TEMPO: {PROG, POS, BAR, CHORD}, PROG: {PITCH, DRUM},
    PITCH: {VEL}, DRUM: {VEL}, VEL: {DUR}, DUR: {PROG, POS, BAR}, CHORD: {PROG, POS, BAR},
}
_BIG = 1 << 30


class _Vocab:
    """Every id's REMI base tokens as (type, value, text) triples, parsed once per tokenizer."""

    def __init__(self, tok: "MelodiaTokenizer", size: int):
        remi = tok.remi
        self.size = size
        self.base_size = tok.base_size
        self.pos_per_beat = int(remi.config.max_num_pos_per_beat)
        self.tempos: dict[str, float] = {}
        self.timesigs: dict[str, tuple[int, int]] = {}
        self.programs: set[int] = set()
        for t in remi.vocab:
            typ, _, val = t.partition("_")
            if typ == "Tempo":
                self.tempos[t] = float(val)
            elif typ == "TimeSig":
                a, b = val.split("/")
                self.timesigs[val] = (int(a), int(b))
            elif typ == "Program":
                self.programs.add(int(val))
        dur_ticks = remi._tpb_tokens_to_ticks
        self._dur_pos: dict[str, int] = {}
        for tpb, table in dur_ticks.items():  # positions are per beat: the same for every denominator
            tpp = tpb // self.pos_per_beat
            for val, ticks in table.items():
                self._dur_pos.setdefault(val, int(ticks) // tpp)
            break
        cache: dict[str, tuple[int, int, str]] = {}

        def parse(t: str) -> tuple[int, int, str]:
            if t not in cache:
                typ, _, val = t.partition("_")
                code = _TYPE_CODE.get(typ, OTHER)
                if code in (POS, PROG, PITCH, DRUM, VEL):
                    v = int(val)
                elif code == DUR:
                    v = self._dur_pos[val]
                elif code == TSIG:
                    a, b = self.timesigs[val]
                    v = a * 1000 + b
                else:
                    v = 0
                cache[t] = (code, v, t)
            return cache[t]

        specials = {PAD_ID, BOS_ID, EOS_ID}
        specials |= {i for t, i in remi.vocab.items() if t.split("_")[0] in ("PAD", "BOS", "EOS", "MASK")}
        self.seqs: list[tuple[tuple[int, int, str], ...]] = []
        other = ((OTHER, 0, ""),)
        for i in range(size):
            if i == EOS_ID:
                self.seqs.append(((EOS_T, 0, "EOS_None"),))
            elif i >= self.base_size and i - self.base_size < len(tok.controls) \
                    and tok.controls[i - self.base_size].startswith("Chord_"):
                self.seqs.append(((CHORD, i, tok.controls[i - self.base_size]),))  # a chord change (value: its id)
            elif i in specials or i >= self.base_size:
                self.seqs.append(other)
            else:
                self.seqs.append(tuple(parse(t) for t in tok.base_tokens(i)))
        self.by_first: dict[str, list[int]] = {}
        for i, s in enumerate(self.seqs):
            if s and s[0][0] != OTHER:
                self.by_first.setdefault(s[0][2], []).append(i)

    def tempo_token(self, qpm: float, skip: str | None = None) -> str:
        """The Tempo token nearest (on a log scale) to ``qpm``, other than ``skip``."""
        return min((t for t in self.tempos if t != skip), key=lambda t: abs(math.log(self.tempos[t] / qpm)))


@dataclass
class _State:
    """Grammar state of one sequence."""

    total: int = 1          # bars requested (the piece ends after this many)
    phase: int = START
    bar: int = 0            # bars started
    pos: int = -1           # position in the current bar (-1: none yet)
    prog: int = 0           # current program
    here: dict = field(default_factory=dict)   # program -> set of pitches started at pos
    forced: tuple = ()      # sets of base-token texts the next base tokens must come from
    done: bool = False
    plan: tuple = ()        # chords asked for, still to write: (bar 1.., position, chord id), in order
    chord: int = -1         # id of the chord token in force (-1: none yet)

    def copy(self) -> "_State":
        return _State(self.total, self.phase, self.bar, self.pos, self.prog,
                      {p: set(s) for p, s in self.here.items()}, self.forced, self.done, self.plan, self.chord)


class _Grammar:
    """The legal-next-token masks for one (meter, instruments) setting (any number of bars:
    each state carries its own ``total``).

    ``advance`` is the reference (token by token, exact); ``mask`` the fast path (arrays per
    id, cached per compact state) — tests check that the two agree.
    """

    def __init__(self, vocab: _Vocab, meter: tuple[int, int], programs: frozenset[int]):
        import numpy as np
        import torch

        self.vocab = vocab
        self.meter = meter[0] * 1000 + meter[1]
        self.L = meter[0] * vocab.pos_per_beat
        self.programs = programs
        V = vocab.size
        valid = np.zeros(V, bool)
        ftype = np.full(V, OTHER, np.int64)
        first_pos = np.full(V, _BIG, np.int64)
        nbars = np.zeros(V, np.int64)
        dur_cur = np.zeros(V, np.int64)
        end_rel = np.zeros(V, np.int64)
        single = np.zeros(V, bool)
        implicit: dict[int, list[int]] = {}
        exp_note: dict[tuple[int, int], list[int]] = {}
        exp_prog: dict[int, list[int]] = {}
        conflict: dict[int, list[int]] = {}
        L = self.L
        for i, seq in enumerate(vocab.seqs):
            if not seq:
                continue
            ftype[i] = seq[0][0]
            single[i] = len(seq) == 1
            ok, prev, pos, bars_in, prog = True, None, None, 0, None
            ext, fpos, dc, er = True, _BIG, 0, 0
            ext_keys: set = set()
            seg: set = set()
            progs_here: set = set()
            for t, v, _ in seq:
                if prev is not None and t not in _NEXT.get(prev, ()):
                    ok = False
                    break
                if t == BAR:
                    bars_in += 1
                    pos, ext, seg = -1, False, set()
                elif t == TSIG:
                    ok = v == self.meter
                elif t == POS:
                    if v >= L or (pos is not None and v <= pos):
                        ok = False
                    elif pos is None and bars_in == 0:
                        fpos = v
                    pos, ext, seg = v, False, set()
                elif t == PROG:
                    ok = v in programs
                    prog = v
                    if ext:
                        progs_here.add(v)
                elif t in (PITCH, DRUM):
                    if prog is None:  # continues the current program (first token of the id)
                        implicit.setdefault(v, []).append(i)
                        ext_keys.add((None, v))
                    else:
                        if (t == DRUM) != (prog == -1):
                            ok = False
                        elif ext:
                            if (prog, v) in ext_keys:
                                ok = False
                            else:
                                ext_keys.add((prog, v))
                                exp_note.setdefault((prog, v), []).append(i)
                                if (None, v) in ext_keys:
                                    conflict.setdefault(prog, []).append(i)
                        elif (prog, v) in seg:
                            ok = False
                        else:
                            seg.add((prog, v))
                elif t == DUR:
                    if ext:
                        dc = max(dc, v)
                    else:
                        er = max(er, bars_in * L + pos + v)
                elif t not in (VEL, CHORD):
                    ok = False  # Tempo (only in the forced opening), specials, controls
                if not ok:
                    break
                prev = t
            if ok:
                valid[i] = True
                first_pos[i], nbars[i], dur_cur[i], end_rel[i] = fpos, bars_in, dc, er
                for p in progs_here:
                    exp_prog.setdefault(p, []).append(i)
        # for chords asked for (see plan_mask): where each id leaves the position, and whether
        # it ends on a Position (the slot a chord token follows)
        last_pos = np.full(V, -1, np.int64)
        ends_pos = np.zeros(V, bool)
        is_chord = np.zeros(V, bool)
        for i, seq in enumerate(vocab.seqs):
            if not seq:
                continue
            for t, v, _ in seq:
                if t == BAR:
                    last_pos[i] = -1
                elif t == POS:
                    last_pos[i] = v
            ends_pos[i] = seq[-1][0] == POS
            is_chord[i] = seq[0][0] == CHORD
        self.last_pos, self.ends_pos, self.is_chord = last_pos, ends_pos, is_chord
        self._chord_ok: dict[int, "torch.Tensor"] = {}
        self._no_new_place = torch.from_numpy(np.array(
            [bool(seq) and all(t not in (BAR, POS, PROG) for t, _, _ in seq) for seq in vocab.seqs]))
        self.valid, self.ftype, self.first_pos, self.nbars = valid, ftype, first_pos, nbars
        self.dur_cur, self.end_rel, self.single = dur_cur, end_rel, single

        def idx(d: dict) -> dict:
            return {k: torch.tensor(sorted(set(v)), dtype=torch.long) for k, v in d.items()}

        self.implicit, self.exp_note = idx(implicit), idx(exp_note)
        self.exp_prog, self.conflict = idx(exp_prog), idx(conflict)
        max_reach = max(int(dur_cur.max(initial=0)), int(end_rel.max(initial=0)))
        self.bl_cap = max(int(nbars.max(initial=0)), max_reach // L + 2)
        self._first = {}
        for phase in (BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, CHORD):
            for drum in (False, True):
                allowed = {BAR: {TSIG}, TSIG: {POS, BAR}, POS: {PROG, CHORD}, TEMPO: {PROG, POS, BAR, CHORD},
                           PROG: {DRUM} if drum else {PITCH}, PITCH: {VEL}, DRUM: {VEL},
                           VEL: {DUR}, DUR: {PROG, POS, BAR}, CHORD: {PROG, POS, BAR}}[phase]
                arr = np.zeros(_NCODES, bool)
                arr[list(allowed)] = True
                self._first[phase, drum] = arr
        self._finish = {}
        for phase in (BAR, TSIG, POS, TEMPO, PROG, PITCH, DRUM, VEL, DUR, CHORD):
            for more in (False, True):
                allowed = {BAR: {TSIG}, TSIG: {BAR} if more else {POS}, TEMPO: {BAR} if more else {POS},
                           POS: {PROG}, PROG: {PITCH, DRUM}, PITCH: {VEL}, DRUM: {VEL}, VEL: {DUR},
                           DUR: {BAR} if more else set(), CHORD: {BAR} if more else {PROG}}[phase]
                arr = np.zeros(_NCODES, bool)
                arr[list(allowed)] = True
                self._finish[phase, more] = arr
        self._cache: dict[tuple, "torch.Tensor"] = {}
        self._slow_cache: dict[tuple, "torch.Tensor"] = {}
        self._here_cache: dict[tuple, "torch.Tensor"] = {}
        self.eos_only = torch.zeros(V, dtype=torch.bool)
        self.eos_only[EOS_ID] = True

    # ------------------------------------------------------------------ reference rules
    def advance(self, st: _State, seq: Sequence[tuple[int, int, str]]) -> bool:
        """Apply one id's base tokens to ``st`` (in place); False if any is illegal."""
        if not seq:
            return False
        start_counts = {p: len(s) for p, s in st.here.items()}
        ext = True
        N, L = st.total, self.L
        for t, v, text in seq:
            forced = False
            if st.forced:
                if text not in st.forced[0]:
                    return False
                st.forced = st.forced[1:]
                forced = True
            p = st.phase
            if t == BAR:
                if p not in (START, TSIG, TEMPO, DUR, CHORD) or st.bar >= N:
                    return False
                st.bar += 1
                st.pos, st.here, ext = -1, {}, False
            elif t == TSIG:
                if p != BAR or v != self.meter:
                    return False
            elif t == POS:
                if p not in (TSIG, TEMPO, DUR, CHORD) or not st.pos < v < L:
                    return False
                st.pos, st.here, ext = v, {}, False
            elif t == TEMPO:
                if not forced or p != POS:
                    return False
            elif t == CHORD:
                if p not in (POS, TEMPO):
                    return False
                st.chord = v
            elif t == PROG:
                if p not in (POS, TEMPO, DUR, CHORD) or st.pos < 0 or v not in self.programs:
                    return False
                if ext and start_counts.get(v, 0) >= MAX_ONSETS:
                    return False
                st.prog = v
            elif t in (PITCH, DRUM):
                if p != PROG or (t == DRUM) != (st.prog == -1):
                    return False
                started = st.here.setdefault(st.prog, set())
                if v in started:
                    return False
                started.add(v)
            elif t == VEL:
                if p not in (PITCH, DRUM):
                    return False
            elif t == DUR:
                if p != VEL or v > (N - st.bar + 1) * L - st.pos:
                    return False
            elif t == EOS_T:
                if p != DUR or st.bar != N:
                    return False
                st.done = True
            else:
                return False
            st.phase = t
        return True

    def legal(self, st: _State, i: int) -> bool:
        """Whether id ``i`` may follow state ``st`` (reference rules; ``st`` is not changed)."""
        return self.advance(st.copy(), self.vocab.seqs[i])

    # ------------------------------------------------------------------ fast masks
    def _key(self, st: _State, finish: bool) -> tuple:
        return (st.phase, st.pos, st.prog == -1 and st.phase == PROG,
                min(st.total - st.bar, self.bl_cap), finish)

    def _fast(self, key: tuple) -> "torch.Tensor":
        import torch

        phase, pos, drum, bl, finish = key
        ft = self.ftype
        m = self.valid & self._first[phase, drum][ft]
        m &= self.first_pos > pos
        m &= self.nbars <= bl
        m &= self.dur_cur <= (bl + 1) * self.L - pos
        m &= self.end_rel <= (bl + 1) * self.L
        if finish:
            m &= self.single & self._finish[phase, bl > 0][ft]
        m[EOS_ID] = phase == DUR and bl == 0
        return torch.from_numpy(m)

    def _slow(self, st: _State) -> "torch.Tensor":
        import torch

        m = torch.zeros(self.vocab.size, dtype=torch.bool)
        cands = [i for text in st.forced[0] for i in self.vocab.by_first.get(text, ())] if st.forced \
            else range(self.vocab.size)
        for i in cands:
            if self.legal(st, i):
                m[i] = True
        return m

    def mask(self, st: _State, finish: bool = False) -> "torch.Tensor":
        """Bool mask [vocab] of the ids that may follow ``st`` (a shared, cached tensor when
        no pitch has started at the current position; do not modify it)."""
        if st.done:
            return self.eos_only
        if st.forced:
            key = (st.forced, st.phase, min(st.total - st.bar, self.bl_cap), st.pos, st.prog,
                   tuple(sorted((p, tuple(sorted(s))) for p, s in st.here.items())))
            m = self._slow_cache.get(key)
            if m is None:
                m = self._slow_cache[key] = self._slow(st)
            return m
        key = self._key(st, finish)
        m = self._cache.get(key)
        if m is None:
            m = self._cache[key] = self._fast(key)
        if st.here or (st.phase == PROG and st.prog in self.conflict):
            # pitches already started here (a chord in progress): cached too, chords repeat
            hkey = (key, st.prog, frozenset((p, frozenset(s)) for p, s in st.here.items()))
            hm = self._here_cache.get(hkey)
            if hm is None:
                if len(self._here_cache) > 20000:
                    self._here_cache.clear()
                hm = self._here_cache[hkey] = m.clone()
                self.exclude(st, hm)
            m = hm
        return m

    def plan_mask(self, st: _State) -> "torch.Tensor | None":
        """For a state with a chord plan: the ids that keep the next planned chord's slot (bar b,
        position p) reachable, or only that chord's id when the sequence stands on it. An id may
        not carry the sequence past the slot, nor onto it with notes after it (BPE merges a
        Position with the notes that follow); EOS waits until the plan is done, and so, when
        the chords were asked for (the plan ends in a ``-1`` marker), does every chord the model
        would write itself. None: no plan left.

        Example: ``m = grammar.mask(st) & grammar.plan_mask(st)``
        """
        import numpy as np
        import torch

        if not st.plan:
            return None
        b, p, cid = st.plan[0]
        if cid < 0:  # every chord asked for is written: the model writes none of its own
            return torch.from_numpy(~self.is_chord)
        if st.bar == b and st.pos == p and st.phase in (POS, TEMPO):
            m = torch.zeros(self.vocab.size, dtype=torch.bool)
            m[cid] = True
            return m
        reach = st.bar + self.nbars
        lp = np.where(self.nbars > 0, self.last_pos, np.maximum(self.last_pos, st.pos if st.bar == b else -1))
        ok = (reach < b) | ((reach == b) & ((lp < p) | ((lp == p) & self.ends_pos)))
        if st.plan[-1][2] < 0:  # chords asked for (the plan ends in its marker): no chord of the model's
            ok &= ~self.is_chord
        ok[EOS_ID] = False
        return torch.from_numpy(ok)

    def chord_tone_mask(self, st: _State, free_program: int | None) -> "torch.Tensor | None":
        """With chords asked for: the ids whose pitched notes are tones of the chord in force,
        except that ``free_program`` (the melody) may use any pitch for a note that starts off
        the beat (a passing tone) when the id starts no new position or program. None when no
        chord is in force.

        Example: ``m &= grammar.chord_tone_mask(st, free_program=0)``
        """
        import numpy as np
        import torch

        if st.chord < 0:
            return None
        ok = self._chord_ok.get(st.chord)
        if ok is None:
            from .harmony import chord_from_token_name

            ch = chord_from_token_name(self.vocab.seqs[st.chord][0][2])
            tones = set(range(12)) if ch is None else set(ch.pitch_classes)
            ok = np.ones(self.vocab.size, bool)
            for i, seq in enumerate(self.vocab.seqs):
                if any(t == PITCH and v % 12 not in tones for t, v, _ in seq):
                    ok[i] = False
            ok = self._chord_ok[st.chord] = torch.from_numpy(ok)
        if free_program is not None and st.prog == free_program and st.phase == PROG \
                and st.pos % self.vocab.pos_per_beat:
            return ok | self._no_new_place
        return ok

    def exclude(self, st: _State, m: "torch.Tensor") -> None:
        """Remove from ``m`` the ids that would restart a pitch at the current position."""
        for p, started in st.here.items():
            for v in started:
                ix = self.exp_note.get((p, v))
                if ix is not None:
                    m[ix] = False
                if p == st.prog:
                    ix = self.implicit.get(v)
                    if ix is not None:
                        m[ix] = False
            if len(started) >= MAX_ONSETS:
                ix = self.exp_prog.get(p)
                if ix is not None:
                    m[ix] = False
        ix = self.conflict.get(st.prog)
        if ix is not None:
            m[ix] = False

    def finish_needed(self, st: _State) -> int:
        """An upper bound on the ids needed to end validly from ``st`` (finishing mode)."""
        return 10 + 2 * (st.total - st.bar) + len(st.forced)

    def track(self, st: _State, seq: Sequence[tuple[int, int, str]]) -> None:
        """Follow a prompt's tokens without judging them (continuation context)."""
        for t, v, _ in seq:
            if t == BAR:
                st.bar += 1
                st.pos, st.here = -1, {}
            elif t == POS:
                st.pos, st.here = v, {}
            elif t == PROG:
                st.prog = v
            elif t in (PITCH, DRUM):
                st.here.setdefault(st.prog, set()).add(v)
            elif t == CHORD:
                st.chord = v
            if t != OTHER:
                st.phase = t


# =============================================================================== config
@dataclass
class GenerationConfig:
    """What to generate. Every field has a usable default.

    * ``bars`` 1–64 (exactly that many bars come out); ``n`` 1–16 variations, one batch.
    * ``mood`` (name or alias) or ``valence`` and ``arousal`` in [-1, 1]; ``key`` ("F major",
      "Am"); ``tags`` (user tags the model knows).
    * ``tempo`` in quarter notes per minute (nearest tempo token; None lets the model choose);
      ``meter`` "4/4", "3/4", "6/8", ...; ``instruments``: names (see :data:`INSTRUMENTS`) or
      GM programs (0–127, -1 drums); None = the model's default set (melodia.json's
      ``default_programs``; else melody + accompaniment on two piano programs).
    * sampling: ``temperature`` > 0, ``top_k`` (0 = off), ``top_p`` in (0, 1] (1 = off),
      ``guidance`` (classifier-free guidance scale; 1 = off), ``seed`` (same seed, same model,
      same device → identical output), ``max_tokens`` (budget of new ids per sequence; None =
      a generous default from ``bars``).
    * scale: ``in_key`` (default True) keeps pitched notes in the key's scale, natural minor
      for a minor key; ``leading_tone=True`` also lets a minor key use its raised 7th (G♯ in
      A minor: harmonic minor's major V chord). ``in_key=False``: any pitch.
    * harmony and form: ``chords`` (``"Am F C G"``, a chord a bar, cycled; ``"Am:2 F:2 …"``;
      with a form, per letter: ``"A: C G Am F; B: F G Em Am"``), ``chord_tones``,
      ``tonic_frame``; ``form`` (``"AABA"``: equal sections, a returning letter repeats its
      first section's notes) and ``vary`` (a return's last bar written anew).

    Example:
        >>> cfg = GenerationConfig(bars=16, mood="happy", key="G major", tempo=120, n=4, seed=7)
    """

    bars: int = 8
    mood: str | None = None
    valence: float | None = None
    arousal: float | None = None
    key: str | None = None
    tempo: float | None = None
    meter: str = "4/4"
    instruments: Sequence[str | int] | None = None
    tags: Sequence[str] = ()
    n: int = 1
    seed: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    guidance: float = 1.0
    max_tokens: int | None = None
    in_key: bool = True  # pitched notes stay in the key's scale (when there is a key); False: chromatic
    leading_tone: bool = False  # minor keys may also use the raised 7th (for a major V chord)
    chords: str | Sequence[str] | None = None  # "Am F C G" (a chord a bar, cycled) or "Am:2 F:2 …"; None: the model's
    chord_tones: bool = True  # with chords asked for: notes on their tones (the melody's off-beat notes free)
    tonic_frame: bool = True  # no chords asked for, a key known: each 4-bar phrase and the last bar open on the tonic
    form: str | None = None   # "AABA": equal sections; a returning letter repeats its first section's notes
    vary: bool = False        # with form: a returning section's last bar is written anew

    def validate(self) -> None:
        """Raise :class:`BadInputError` naming the first bad value. Example: ``cfg.validate()``."""
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not is_int(self.bars) or not 1 <= self.bars <= MAX_BARS:
            raise BadInputError(f"bars {self.bars!r}: must be an integer from 1 to {MAX_BARS}")
        if not is_int(self.n) or not 1 <= self.n <= MAX_N:
            raise BadInputError(f"n {self.n!r}: must be an integer from 1 to {MAX_N}")
        if not is_num(self.temperature) or self.temperature <= 0:
            raise BadInputError(f"temperature {self.temperature!r}: must be a number above 0")
        if not is_int(self.top_k) or self.top_k < 0:
            raise BadInputError(f"top_k {self.top_k!r}: must be an integer >= 0 (0 = off)")
        if not is_num(self.top_p) or not 0 < self.top_p <= 1:
            raise BadInputError(f"top_p {self.top_p!r}: must be in (0, 1] (1 = off)")
        if not is_num(self.guidance) or not 0 <= self.guidance <= 20:
            raise BadInputError(f"guidance {self.guidance!r}: must be a number from 0 to 20 (1 = off)")
        if self.tempo is not None and (not is_num(self.tempo) or not 20 <= self.tempo <= 400):
            raise BadInputError(f"tempo {self.tempo!r}: must be from 20 to 400 quarter notes per minute")
        if self.seed is not None and not is_int(self.seed):
            raise BadInputError(f"seed {self.seed!r}: must be an integer or None")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < self.min_tokens()):
            raise BadInputError(f"max_tokens {self.max_tokens!r}: must be an integer of at least "
                                f"{self.min_tokens()} for {self.bars} bars")
        if isinstance(self.tags, str):
            raise BadInputError(f"tags {self.tags!r}: give a list of tags")
        for name in ("in_key", "leading_tone"):
            if not isinstance(getattr(self, name), bool):
                raise BadInputError(f"{name} {getattr(self, name)!r}: must be true or false")
        num, den = parse_meter(self.meter)
        if not isinstance(self.vary, bool):
            raise BadInputError(f"vary {self.vary!r}: must be true or false")
        if self.vary and self.form is None:
            raise BadInputError("vary applies to a form: give a form such as \"AABA\" too")
        self.sections()
        if self.chords is not None:
            self.progression()

    def sections(self) -> list[tuple[str, int, int, int | None]]:
        """The form as ``(letter, first bar, bars, first bar of the section it repeats or None)``
        (bars counted from 0), or [] with no form. ``form`` is letters only, one per section,
        up to :data:`MAX_SECTIONS`; the sections share ``bars`` equally.

        Example: ``GenerationConfig(bars=16, form="AABA").sections()[2]  # ('B', 8, 4, None)``
        """
        if self.form is None:
            return []
        form = self.form.strip().upper() if isinstance(self.form, str) else None
        if not form or not form.isalpha() or not form.isascii():
            raise BadInputError(f"form {self.form!r}: write the sections as letters, e.g. \"AABA\" or \"ABAC\"")
        if len(form) > MAX_SECTIONS:
            raise BadInputError(f"form {self.form!r} has {len(form)} sections; at most {MAX_SECTIONS}")
        if len(form) > self.bars:
            raise BadInputError(f"form {self.form!r} has {len(form)} sections, more than the {self.bars} bars")
        if self.bars % len(form):
            raise BadInputError(f"form {self.form!r}: {self.bars} bars do not divide into {len(form)} equal "
                                f"sections (try --bars {len(form) * max(1, round(self.bars / len(form)))})")
        size = self.bars // len(form)
        first: dict[str, int] = {}
        out = []
        for k, letter in enumerate(form):
            out.append((letter, k * size, size, first.get(letter)))
            first.setdefault(letter, k * size)
        return out

    def progression(self) -> list:
        """The chords asked for as ``(start beat, length, Chord)`` over the bars, or [] (see
        :func:`melodia.harmony.parse_progression`). Example: ``cfg.progression()[0]``"""
        from .harmony import parse_progression, split_section_chords

        if self.chords is None:
            return []
        num, den = parse_meter(self.meter)
        per_bar = 4.0 * num / den
        by_letter = split_section_chords(self.chords)
        sections = self.sections()
        if by_letter is not None and not sections:
            raise BadInputError(f"chords {self.chords!r} are given per section: give a form too "
                                "(e.g. --form AABA)")
        if not sections:
            return parse_progression(self.chords, per_bar, self.bars)
        if by_letter is not None:  # each letter its own chords
            letters = {s[0] for s in sections}
            extra = sorted(set(by_letter) - letters)
            if extra:
                raise BadInputError(f"chords: section {extra[0]} is not in the form {self.form!r}")
            missing = [x for x in dict.fromkeys(s[0] for s in sections) if x not in by_letter]
            if missing:
                raise BadInputError(f"chords: section {missing[0]} of the form {self.form!r} has no chords; "
                                    "give chords for every section (\"A: C G Am F; B: F G Em Am\")")
        out = []  # each section starts its chords afresh, so a returning section has its chords
        for letter, first, size, _ in sections:
            text = by_letter[letter] if by_letter is not None else self.chords
            out += [(first * per_bar + t, n, c) for t, n, c in parse_progression(text, per_bar, size)]
        return out

    def min_tokens(self) -> int:
        """The smallest ``max_tokens`` that always leaves room to finish validly."""
        return 16 + 2 * self.bars + 2 * len(self.progression())

    def token_budget(self) -> int:
        """``max_tokens`` or its default (about 200 ids per bar: room for dense piano)."""
        return self.max_tokens if self.max_tokens is not None else 64 + 200 * self.bars


def _with(cfg: GenerationConfig | None, overrides: dict) -> GenerationConfig:
    """``cfg`` (or the defaults) with some fields replaced; unknown names are a BadInputError."""
    cfg = cfg if cfg is not None else GenerationConfig()
    if not isinstance(cfg, GenerationConfig):
        raise BadInputError(f"expected a GenerationConfig, got {type(cfg).__name__}")
    try:
        return replace(cfg, **overrides)
    except TypeError:
        known = ", ".join(f.name for f in fields(GenerationConfig))
        bad = ", ".join(sorted(set(overrides) - {f.name for f in fields(GenerationConfig)}))
        raise BadInputError(f"unknown generation setting(s) {bad}; known: {known}") from None


def parse_meter(meter: str | Sequence[int]) -> tuple[int, int]:
    """``"6/8"`` or ``(6, 8)`` → ``(6, 8)``; :class:`BadInputError` otherwise.

    Example: ``parse_meter("3/4") == (3, 4)``
    """
    try:
        if isinstance(meter, str):
            a, b = meter.strip().split("/")
            num, den = int(a), int(b)
        else:
            num, den = (int(x) for x in meter)
    except (ValueError, TypeError):
        raise BadInputError(f"meter {meter!r}: write it like '4/4', '3/4' or '6/8'") from None
    if num <= 0 or den <= 0 or den & (den - 1):
        raise BadInputError(f"meter {meter!r}: write it like '4/4', '3/4' or '6/8'")
    return num, den


#: ``dynamics`` values: "mood" shapes velocities after sampling (see :func:`shape_dynamics`),
#: "flat" keeps the model's own
DYNAMICS = ("mood", "flat")


def shape_dynamics(score: "symusic.Score", arousal: float, start_tick: int = 0, phrase_bars: int = 4,
                   contrast: float = 0.6, end_tick: int | None = None) -> "symusic.Score":
    """Velocities that follow a mood's arousal and shape each phrase, applied after sampling.

    The shipped model did not learn loudness from the mood tokens (requested sad and calm
    pieces played at mean velocity 88-89, happy 86, tense 83), so melodia shapes it: the notes
    from ``start_tick`` on (a continuation's new bars), up to ``end_tick`` (an infilled span's
    end) when given, are centred on ``74 + 32 · arousal``
    (happy/tense, arousal +0.5: 90; sad/calm, -0.5: 58), keep ``contrast`` of the model's own
    spread around its mean (melody over accompaniment, accents), and follow a swell over each
    phrase of ``phrase_bars`` bars: 6 softer at its start, 8 louder at about two thirds of it,
    6 softer at its end; the piece's last bar is 6 softer again. Velocities stay in 24..120.

    Example: ``soft = shape_dynamics(score, arousal=-0.5)``
    """
    import numpy as np

    from .harmony import bar_lines

    out = score.copy()
    tpq = out.ticks_per_quarter
    stop = end_tick if end_tick is not None else float("inf")
    notes = [(tr, k) for tr in out.tracks for k in range(len(tr.notes)) if start_tick <= tr.notes[k].time < stop]
    if not notes:
        return out
    vel = np.array([tr.notes[k].velocity for tr, k in notes], np.float64)
    on = np.array([tr.notes[k].time for tr, k in notes], np.float64) / tpq
    bars = bar_lines(out)
    first_bar = int(np.searchsorted(bars, start_tick / tpq + 1e-9, side="right") - 1)
    bar_of = np.clip(np.searchsorted(bars, on + 1e-9, side="right") - 1, 0, len(bars) - 2)
    rel = bar_of - first_bar
    phrase = rel // phrase_bars
    p0 = bars[np.clip(first_bar + phrase * phrase_bars, 0, len(bars) - 1)]
    p1 = bars[np.clip(first_bar + (phrase + 1) * phrase_bars, 0, len(bars) - 1)]
    x = np.clip((on - p0) / np.maximum(p1 - p0, 1e-9), 0.0, 1.0)
    swell = -6.0 + 14.0 * np.sin(np.pi * x ** 1.5)
    swell -= np.where(bar_of == bar_of.max(), 6.0, 0.0)
    target = 74.0 + 32.0 * float(np.clip(arousal, -1.0, 1.0))
    new = np.clip(np.round(target + contrast * (vel - vel.mean()) + swell), 24, 120).astype(int)
    for (tr, k), v in zip(notes, new):
        tr.notes[k].velocity = int(v)
    return out


def clip_to_bars(score: "symusic.Score", bars: int) -> "symusic.Score":
    """``score`` with every note cut at the end of its ``bars``-th bar (notes that start after it
    dropped). A form's last section may repeat a section whose last notes were held into the
    next one; in the piece's last bar they are cut at its end, so the piece keeps its bars.
    Returns ``score`` itself when nothing reaches past the end.

    Example: ``score = clip_to_bars(score, 16)``
    """
    import symusic

    from .harmony import bar_lines

    lines = bar_lines(score)
    if len(lines) <= bars:
        return score
    end = int(round(lines[bars] * score.ticks_per_quarter))
    if all(nt.time + nt.duration <= end for tr in score.tracks for nt in tr.notes):
        return score
    out = score.copy()
    for tr in out.tracks:
        kept = [symusic.Note(nt.time, min(nt.duration, end - nt.time), nt.pitch, nt.velocity)
                for nt in tr.notes if nt.time < end]
        tr.notes.clear()
        for nt in kept:
            tr.notes.append(nt)
    return out


def unify_sections(score: "symusic.Score", sections: Sequence[tuple], vary: bool = False) -> "symusic.Score":
    """Make every return of a form's section hold exactly its first section's notes.

    The sampler copies a returning section's ids, so its notes are the same; but a note held
    into the next section is cut where that section repeats its pitch on its track (a MIDI
    file cannot overlap them, see :class:`melodia.api.Piece`; make those cuts before this) or
    where the piece ends, and what follows differs from one occurrence to the next. Here each note of a section's copied
    bars (all, or all but the last with ``vary``) gets the shortest length it has in any
    occurrence of its letter, so every occurrence is note for note the same. ``sections`` as
    :meth:`GenerationConfig.sections`. Returns a changed copy (or ``score`` with no form).

    Example: ``score = unify_sections(score, cfg.sections(), cfg.vary)``
    """
    from .harmony import bar_lines

    if not any(src is not None for *_, src in sections):
        return score
    out = score.copy()
    tpq = out.ticks_per_quarter
    lines = [int(round(b * tpq)) for b in bar_lines(out)]
    bar_len = lines[1] - lines[0] if len(lines) > 1 else 4 * tpq
    groups: dict[str, list[int]] = {}
    for letter, first, size, _ in sections:
        groups.setdefault(letter, []).append(first)
    size = sections[0][2]
    copied = size - int(vary)
    for letter, firsts in groups.items():
        if len(firsts) < 2 or copied < 1:
            continue
        found: dict[tuple, list] = {}
        for k, first in enumerate(firsts):
            lo, hi = first * bar_len, (first + copied) * bar_len
            for ti, tr in enumerate(out.tracks):
                for nt in tr.notes:
                    if lo <= nt.time < hi:
                        found.setdefault((ti, nt.time - lo, nt.pitch), [None] * len(firsts))[k] = nt
        for notes in found.values():
            if all(nt is not None for nt in notes):
                shortest = min(nt.duration for nt in notes)
                for nt in notes:
                    nt.duration = shortest
    return out


def resolve_instruments(instruments: Sequence[str | int] | str | None,
                        default: Sequence[int] = DEFAULT_PROGRAMS) -> tuple[int, ...]:
    """Instrument names / GM programs → distinct programs (a repeated instrument moves to a
    free program of its General MIDI family, as the corpus does). ``None`` or "default" (also
    "melody + accompaniment") is ``default``: the model's own set where it names one.

    Example: ``resolve_instruments(["piano", "bass"]) == (0, 33)``;
    ``resolve_instruments(None) == (0, 1)``
    """
    if instruments is None:
        return tuple(default)
    if isinstance(instruments, (str, int)):
        instruments = [instruments]
    out: list[int] = []
    for item in instruments:
        if isinstance(item, str) and " ".join(item.lower().split()) in _DEFAULT_NAMES:
            progs = list(default)
        elif isinstance(item, bool):
            raise BadInputError(f"unknown instrument {item!r}")
        elif isinstance(item, int) or (isinstance(item, str) and item.strip().lstrip("-").isdigit()):
            p = int(item)
            if not -1 <= p <= 127:
                raise BadInputError(f"instrument program {item!r}: must be 0-127, or -1 for drums")
            progs = [p]
        elif isinstance(item, str):
            name = " ".join(item.lower().replace("_", " ").split())
            if name not in INSTRUMENTS:
                raise BadInputError(f"unknown instrument {item!r}; known: {', '.join(sorted(INSTRUMENTS))}, "
                                    "or a General MIDI program number")
            progs = [INSTRUMENTS[name]]
        else:
            raise BadInputError(f"unknown instrument {item!r}")
        for p in progs:
            if p in out:
                if p == -1:
                    continue
                family = range(p // 8 * 8, p // 8 * 8 + 8)
                free = [q for q in list(family[family.index(p):]) + list(family) if q not in out]
                if not free:
                    raise BadInputError(f"too many instruments of the family of program {p}")
                p = free[0]
            out.append(p)
    if not out:
        raise BadInputError("instruments: give at least one instrument")
    return tuple(out)


# =============================================================================== generator
class Generator:
    """Conditioned, grammar-constrained sampling from a melodia model.

    One generator owns one KV cache: use it from one thread at a time (or one per thread).
    Grammar tables are built once per (meter, bars, instruments) and cached.

    Example:
        >>> gen = Generator(model, tok)
        >>> ids = gen.generate(GenerationConfig(bars=4, mood="sad", seed=3))
        >>> longer = gen.continue_from("clip.mid", bars=4, context_bars=4)
    """

    def __init__(self, model: Any, tokenizer: "MelodiaTokenizer", device: str = "cpu", weights: str = "auto",
                 default_programs: Sequence[int] | None = None, tempo_unknown: str | None = None):
        vs = int(model.config.vocab_size)
        if vs < tokenizer.vocab_size:
            raise BadModelError(f"model vocabulary ({vs}) is smaller than the tokenizer's ({tokenizer.vocab_size})")
        self.tok = tokenizer
        self.model = model
        self.net = LeanLlama(model, device=device, weights=weights)
        self.vocab = _Vocab(tokenizer, vs)
        import torch

        #: ids that open a new bar (their first base token is Bar): in the last bar they mean "end"
        self._bar_ids = torch.tensor([i for i, sq in enumerate(self.vocab.seqs) if sq and sq[0][0] == BAR] or [EOS_ID])
        #: the instruments when a request names none (melodia.json's "default_programs", if any)
        self.default_programs = tuple(int(p) for p in default_programs) if default_programs else DEFAULT_PROGRAMS
        missing = [p for p in self.default_programs if p not in self.vocab.programs]
        if missing:
            raise BadModelError(f"default_programs {missing} are not in the model's vocabulary")
        #: the Tempo token that in the model's training data mostly meant "no tempo given"
        #: (melodia.json's "tempo_unknown"; see :meth:`tempo_for_model`), or None
        self.tempo_unknown = tempo_unknown
        if tempo_unknown is not None and tempo_unknown not in self.vocab.tempos:
            raise BadModelError(f"tempo_unknown {tempo_unknown!r} is not a Tempo token of the model's vocabulary")
        self._grammars: dict[tuple, _Grammar] = {}
        self._in_key: dict[tuple[int, bool], Any] = {}

    # ------------------------------------------------------------------ helpers
    def in_key_mask(self, key_id: int, leading_tone: bool = False) -> "torch.Tensor | None":
        """Ids whose pitches all lie in the scale of a KEY_ control (major: the seven diatonic
        pitch classes; minor: natural minor, the scale of the corpus's minor music, plus the
        raised 7th with ``leading_tone``); None for ``KEY_any``.

        Minor leaves out the raised 7th: in the default corpus's minor pieces (moved to C) B♮
        sounds 1-2% of the time against B♭'s 10-12%, and with it allowed, samples short of the
        minor third read as the relative or the dominant's major (sad requests read as sad
        72% and 78% on two sets of 32 samples; natural minor: 94% and 88%).

        Example: ``gen.in_key_mask(tok.key_id("A minor"))``
        """
        import torch

        from .moods import key_from_token_name

        cached = (key_id, bool(leading_tone))
        if cached in self._in_key:
            return self._in_key[cached]
        name = self.tok.id_to_token(key_id) if key_id >= self.tok.base_size else "KEY_any"
        key = key_from_token_name(name) if name.startswith("KEY_") else "any"
        mask = None
        if key != "any":
            from .moods import KEY_NAMES

            idx = KEY_NAMES.index(key)
            tonic, minor = idx % 12, idx >= 12
            steps = ((0, 2, 3, 5, 7, 8, 10) + ((11,) if leading_tone else ())) if minor else (0, 2, 4, 5, 7, 9, 11)
            scale = {(tonic + st) % 12 for st in steps}
            mask = torch.ones(self.vocab.size, dtype=torch.bool)
            for i in range(4, self.tok.base_size):
                for t in self.tok.base_tokens(i):
                    if t.startswith("Pitch_") and int(t[6:]) % 12 not in scale:
                        mask[i] = False
                        break
            # chords keep to the scale too (C major in C minor would pull the notes to major)
            for i, ch in self.tok.chord_ids().items():
                if ch is not None and not ch.pitch_classes <= scale:
                    mask[i] = False
        self._in_key[cached] = mask
        return mask

    def tempo_for_model(self, qpm: float) -> str:
        """The Tempo token the model is conditioned on for a tempo of ``qpm``: the nearest one,
        except where that is the model's ``tempo_unknown`` token, whose music was mostly files
        with no tempo of their own (music21 and abc2midi write 120 qpm into those): then the
        nearest other one. The piece itself still gets the tempo asked for (Composer writes it;
        a continuation keeps its prompt's).

        For the shipped model that token is ``Tempo_122.99``: 13,418 of the 13,734 corpus pieces
        in it have no tempo (folk tunes, chorales). Tense requests at an explicit 120 qpm, the
        usual DAW default, read as tense 69% of the time over 128 samples; conditioned on the
        neighbour, 116 qpm, 82%. (Happy: 86% and 89% over 64.)

        Example: ``gen.tempo_for_model(120)  # 'Tempo_115.93' for the shipped model``
        """
        token = self.vocab.tempo_token(qpm)
        if token == self.tempo_unknown and len(self.vocab.tempos) > 1:
            token = self.vocab.tempo_token(qpm, skip=token)
        return token

    def grammar(self, meter: tuple[int, int], programs: Sequence[int]) -> _Grammar:
        """The (cached) grammar of one meter and instrument set. Example: ``gen.grammar((4, 4), (0, 1))``."""
        key = (meter, frozenset(programs))
        g = self._grammars.get(key)
        if g is None:
            if len(self._grammars) > 64:
                self._grammars.clear()
            g = self._grammars[key] = _Grammar(self.vocab, meter, frozenset(programs))
        return g

    def _meter(self, cfg: GenerationConfig) -> tuple[int, int]:
        num, den = parse_meter(cfg.meter)
        if f"{num}/{den}" not in self.vocab.timesigs:
            raise BadInputError(f"meter {cfg.meter!r} is not in this model's vocabulary; use one of "
                                f"{', '.join(self.vocab.timesigs)}")
        return num, den

    def _programs(self, instruments: Any) -> tuple[int, ...]:
        progs = resolve_instruments(instruments, self.default_programs)
        missing = [p for p in progs if p not in self.vocab.programs]
        if missing:
            raise BadInputError(f"instrument program(s) {missing} not in this model's vocabulary")
        return progs

    def _controls(self, cfg: GenerationConfig) -> tuple[list[int], list[int], tuple[float, float] | None]:
        """(conditional, unconditional) control prefixes of equal length, and the tempo band.

        A canonical mood with no key or tempo given brings its defaults (``moods.mood_defaults``):
        a key of its mode and a tempo band for its arousal. These are what the model reads: with
        a key-normalised tokenizer the key token is its mode on C (:meth:`shown_prefix` names
        the key itself).
        """
        mood, key, tags, band = self._request(cfg)
        cond = self.tok.controls_prefix(mood, self.tok.key_for_model(key), tags)
        uncond = self.tok.controls_prefix("any", None, tags)
        return cond, uncond, band

    def shown_prefix(self, cfg: GenerationConfig) -> list[int]:
        """The control prefix :meth:`generate` puts before the new ids: the mood, the key the
        piece is in (so ``tok.decode`` moves key-normalised notes there) and the tags.

        Example: ``gen.shown_prefix(GenerationConfig(mood="sad", key="E minor"))``
        """
        mood, key, tags, _ = self._request(cfg)
        return self.tok.controls_prefix(mood, key, tags)

    def _request(self, cfg: GenerationConfig) -> tuple[str, str | None, list[str], tuple[float, float] | None]:
        """(mood, key, tags, tempo band) of a request, with the mood's defaults filled in."""
        from .moods import mood_defaults, resolve_mood

        try:
            mood = resolve_mood(cfg.mood, cfg.valence, cfg.arousal)
        except BadInputError:
            word = (cfg.mood or "").strip().lower()
            if cfg.valence is not None or cfg.arousal is not None or f"MOOD_{word}" not in self.tok.controls:
                raise
            mood = word  # a user mood the fine-tuned model knows
        tags = list(cfg.tags)
        key, band = mood_defaults(mood, cfg.seed)
        if cfg.key is not None:
            key = cfg.key
        elif cfg.chords is not None:  # chords given and no key: the key follows from the chords
            from .harmony import key_of_chords

            key = key_of_chords([c for _, _, c in cfg.progression()])
        return mood, key, tags, band

    def _key_for(self, cfg: GenerationConfig) -> str | None:
        """The key a request is written in (given, from its chords, or the mood's default)."""
        return self._request(cfg)[1]

    # ------------------------------------------------------------------ public
    def generate(self, cfg: GenerationConfig | None = None, **overrides: Any) -> list[list[int]]:
        """``cfg.n`` sequences of token ids (controls, music, EOS), each exactly ``cfg.bars`` bars.

        The controls name the key asked for (or the mood's default key); for a key-normalised
        tokenizer the music is written on C and ``tok.decode`` moves it to that key.

        Example: ``ids = gen.generate(GenerationConfig(bars=8, mood="calm"), seed=1)``
        """
        cfg = _with(cfg, overrides)
        g, cond, uncond, states = self.prepare(cfg)
        new = self._sample(g, cond, uncond, states, cfg)
        shown = self.shown_prefix(cfg)
        return [shown + row for row in new]

    def prepare(self, cfg: GenerationConfig) -> tuple[_Grammar, list[int], list[int], list[_State]]:
        """Validate ``cfg`` and build what sampling starts from: the grammar, the conditional and
        unconditional control prefixes, and one grammar state per variation (with the forced
        opening ``Bar TimeSig_<meter> Position_0 Tempo``). Used by :meth:`generate` and benchmarks.

        Example: ``grammar, cond, uncond, states = gen.prepare(GenerationConfig(bars=4))``
        """
        cfg.validate()
        meter = self._meter(cfg)
        progs = self._programs(cfg.instruments)
        cond, uncond, band = self._controls(cfg)
        g = self.grammar(meter, progs)
        if cfg.tempo is not None:
            tempos = frozenset([self.tempo_for_model(cfg.tempo)])
        else:
            in_band = [t for t, q in self.vocab.tempos.items() if band and band[0] <= q <= band[1]]
            # A mood's band leaves out the model's "tempo unknown" token when it has others: for
            # the shipped model 13,217 of its 18,007 training chunks opened with it (tempo-less
            # folk tunes and chorales), and tense requests that opened there read as happy or
            # calm 6 times in 7 (tense agreement 70% with it in the band, 83% without).
            tempos = frozenset([t for t in in_band if t != self.tempo_unknown] or in_band or self.vocab.tempos)
        opening = (frozenset(["Bar_None"]), frozenset([f"TimeSig_{meter[0]}/{meter[1]}"]),
                   frozenset(["Position_0"]), tempos)
        plan = self.chord_plan(cfg, meter)
        if not plan and cfg.in_key and cfg.tonic_frame and self.tok.has_chords:
            plan = self.tonic_plan(cfg)
        return g, cond, uncond, [_State(total=cfg.bars, forced=opening, plan=plan) for _ in range(cfg.n)]

    def tonic_plan(self, cfg: GenerationConfig) -> tuple:
        """The plan of ``tonic_frame``: the key's tonic chord at the start of every four-bar
        phrase (bars 1, 5, 9, …) and of the last bar, the model's own chords everywhere else;
        () with no key.

        Phrases that start at home state the key. POP909 opens on the tonic chord in 71% of its
        songs in major and 53% in minor and closes on it in 62% and 63% (41% minor, 22% major);
        its bars 1, 5, 9, … counted from the first downbeat hold the tonic 31-34% of the time,
        other bars 26-31%, so the phrase starts are our choice, not the corpus's habit.
        Without the plan the shipped model's minor pieces drifted to the relative major: over
        64 samples of 16 bars sad read as sad 77% and tense as tense 83%; with it 94% and 95%,
        and its metre and harmony figures held (beats holding a triad 0.53 → 0.55, note time on
        chord tones 0.83 → 0.84, 32 samples).

        Example: ``gen.tonic_plan(GenerationConfig(mood="sad", key="D minor", bars=8))``
        """
        from .harmony import Chord
        from .moods import KEY_NAMES, parse_key

        key = self.tok.key_for_model(self._key_for(cfg))
        if key is None or str(key).strip().lower() == "any":
            return ()
        idx = KEY_NAMES.index(parse_key(key))
        tonic = self.tok.chord_id(Chord(idx % 12, "min" if idx >= 12 else "maj"))
        return tuple((b, 0, tonic) for b in sorted({1, cfg.bars, *range(5, cfg.bars + 1, 4)}))

    def chord_plan(self, cfg: GenerationConfig, meter: tuple[int, int]) -> tuple:
        """``cfg.chords`` as the grammar's plan: ``(bar 1.., position, chord id)`` at every chord
        change, the chords moved as the notes are (key-normalised: onto C).

        Example: ``gen.chord_plan(GenerationConfig(chords="Am F", key="A minor"), (4, 4))``
        """
        prog = cfg.progression()
        if not prog:
            return ()
        if not self.tok.has_chords:
            raise BadInputError("this model has no chord tokens, so it cannot follow chords; "
                                "retrain or fine-tune it with melodia 0.2's tokenizer")
        bar_len = 4.0 * meter[0] / meter[1]
        shift = self.tok.model_shift(self._key_for(cfg))
        per = self.vocab.pos_per_beat * meter[1] / 4
        plan, prev = [], None
        for start, _, chord in prog:
            bar = int(start // bar_len + 1e-9)
            pos = int(round((start - bar * bar_len) * per))
            cid = self.tok.chord_id(chord.transposed(shift) if shift else chord)
            if cid == prev:  # the same chord again: it goes on (the corpus has a token at each change only)
                continue
            plan.append((bar + 1, pos, cid))
            prev = cid
        return tuple(plan) + ((cfg.bars + 1, 0, -1),)  # the end: no chords but these

    def generate_scores(self, cfg: GenerationConfig | None = None, **overrides: Any) -> list["symusic.Score"]:
        """Like :meth:`generate`, decoded to ``symusic.Score`` objects.

        Example: ``scores = gen.generate_scores(bars=4, mood="happy", n=2)``
        """
        return [self.tok.decode(ids) for ids in self.generate(cfg, **overrides)]

    def _read_prompt(self, score: Any, cfg: GenerationConfig, what: str) -> tuple:
        """A prompt as the model reads it: ``(orig, cfg, shift, meter, bars, tempos)`` where
        ``orig`` is the loaded score, ``cfg`` has the prompt's own key where none was given,
        ``shift`` the semitones the key-normalised notes move back by, ``meter`` the prompt's
        last meter, ``bars`` one array of REMI base ids per bar of the prompt (chords inserted,
        trailing bars its last notes sound in added) and ``tempos[k]`` the Tempo id in force
        when bar ``k`` starts (None before any)."""
        import numpy as np
        from miditok.utils import get_bars_ticks

        from .midifile import load_score
        from .tokenizer import split_bars

        orig = load_score(score)
        if orig.note_num() == 0:
            raise BadInputError(f"{what}: the clip has no notes")
        remi = self.tok.remi
        ts = sorted(orig.time_signatures, key=lambda t: t.time)
        meter = (ts[-1].numerator, ts[-1].denominator) if ts else (4, 4)
        if f"{meter[0]}/{meter[1]}" not in self.vocab.timesigs:
            raise BadInputError(f"the clip ends in {meter[0]}/{meter[1]}, which this model cannot write")
        pre = orig.copy()
        if self.tempo_unknown is not None:  # the model reads a prompt at 120 qpm as at its neighbour
            for t in pre.tempos:  # (before MidiTok rounds 120 to the bin's own 122.99)
                t.qpm = self.vocab.tempos[self.tempo_for_model(t.qpm)]
        pre = remi.preprocess_score(pre)
        seq = remi.encode(pre, encode_ids=False, no_preprocess_score=True)
        if isinstance(seq, list):
            seq = seq[0]
        base = np.asarray(seq.ids, dtype=np.int64)
        if cfg.key is None:  # the prompt's own key, not the mood's default one
            from .moods import estimate_key

            try:
                cfg = replace(cfg, key=estimate_key(orig).name)
            except BadInputError:  # a drums-only prompt has no key
                pass
        # a key-normalised model reads the prompt with the key's tonic on C; its notes move back
        shift = -self.tok.model_shift(cfg.key)
        if shift:
            from .tokenizer import pitch_shift_table

            base = pitch_shift_table(remi, -shift)[base]
        if self.tok.has_chords:  # the prompt's chords (its markers, else recognised), as training read them
            from .tokenizer import chord_positions, insert_chords

            base = insert_chords(self.tok, base, chord_positions(pre, remi, -shift))
        bar_id = remi.vocab["Bar_None"]
        all_bars = split_bars(base, bar_id)
        n_orig = len(get_bars_ticks(orig))
        ts_id = remi.vocab[f"TimeSig_{meter[0]}/{meter[1]}"]
        while len(all_bars) < n_orig:  # trailing bars the prompt's last notes still sound in
            all_bars.append(np.asarray([bar_id, ts_id], dtype=np.int64))
        tempo_ids = {i for t, i in remi.vocab.items() if t.startswith("Tempo_")}
        tempos, tempo = [], None
        for b in all_bars:
            tempos.append(tempo)
            for i in b:
                if int(i) in tempo_ids:
                    tempo = int(i)
        return orig, cfg, shift, meter, all_bars, tempos

    def _encode_context(self, bars: list, tempo: int | None) -> list[int]:
        """Context bars → model ids (BPE per bar), the tempo in force restated in the first."""
        from .tokenizer import encode_bars, restate_tempo

        bars = list(bars)
        if bars and tempo is not None:
            bars[0] = restate_tempo(bars[0], tempo, self.tok.remi)
        return [i for b in encode_bars(self.tok, bars) for i in b]

    def _new_notes(self, ids: list[int], n_ctx: int, shift: int) -> tuple["symusic.Score", int | None, list]:
        """Decode ``ids`` (context bars, then new ones; no controls), the notes moved back by
        ``shift``: ``(score, tick where bar n_ctx starts or None, [(tick, chord name)] of the new
        bars' chords)``."""
        from miditok.utils import get_bars_ticks

        from .tokenizer import transpose_score

        dec = self.tok.decode(ids)  # no controls: no key move; ``shift`` below
        if shift:
            dec = transpose_score(dec, shift)
        starts = get_bars_ticks(dec)
        start = starts[n_ctx] if len(starts) > n_ctx else (0 if n_ctx == 0 else None)
        chords = []
        if self.tok.has_chords and start is not None:
            tpq = dec.ticks_per_quarter
            for beat, ch in self.tok.chords(ids):
                tick = int(round(beat * tpq))
                if tick >= start:
                    name = "N.C." if ch is None else (ch.transposed(shift) if shift else ch).name
                    chords.append((tick, name))
        return dec, start, chords

    def continue_from(self, score: Any, bars: int, context_bars: int = 4, cfg: GenerationConfig | None = None,
                      include_prompt: bool = True) -> list["symusic.Score"]:
        """Continue a piece: its last ``context_bars`` bars are the context; ``bars`` new bars follow.

        ``score``: a ``symusic.Score``, MIDI path or MIDI bytes. Returns ``cfg.n`` scores: the
        prompt unchanged (same ticks per quarter, every note as it was) plus exactly ``bars`` new
        bars, or with ``include_prompt=False`` the new bars alone (starting at tick 0). The new bars
        keep the prompt's last meter and tempo; instruments default to the prompt's programs.
        ``cfg.chords`` apply to the new bars (cycled from the first); the new bars' chords are
        added as markers. A form does not apply to a continuation.

        Example: ``out = gen.continue_from("clip.mid", bars=4, cfg=GenerationConfig(mood="tense"))``
        """
        import symusic
        from miditok.utils import get_bars_ticks

        cfg = _with(cfg, {"bars": bars})
        cfg.validate()
        _check_context_bars(context_bars)
        if cfg.form is not None:
            raise BadInputError("a form applies to a new piece, not to a continuation")
        orig, cfg, shift, meter, all_bars, tempos = self._read_prompt(score, cfg, "continue_from")
        first = max(0, len(all_bars) - context_bars)
        ctx_ids = self._encode_context(all_bars[first:], tempos[first] if first > 0 else None)
        progs = self._prompt_programs(orig, cfg)
        cond, uncond, _ = self._controls(cfg)
        n_ctx = len(all_bars) - first
        g = self.grammar(meter, progs)
        st = self._context_state(g, ctx_ids, n_ctx + bars)
        st.plan = tuple((b + n_ctx, p, c) for b, p, c in self.chord_plan(cfg, meter))  # chords of the new bars
        states = [st.copy() for _ in range(cfg.n)]
        new = self._sample(g, [*cond, *ctx_ids], [*uncond, *ctx_ids], states, cfg)

        # new notes → the prompt's timeline and resolution
        ticks_per_bar_orig = orig.ticks_per_quarter * 4 * meter[0] // meter[1]
        orig_end = get_bars_ticks(orig)[-1] + ticks_per_bar_orig
        out = []
        for row in new:
            dec, start, chords = self._new_notes(ctx_ids + row, n_ctx, shift)
            if include_prompt:
                res, offset = orig.copy(), orig_end
            else:
                res, offset = symusic.Score(orig.ticks_per_quarter), 0
                last_tempo = sorted(orig.tempos, key=lambda t: t.time)
                res.tempos.append(symusic.Tempo(0, qpm=last_tempo[-1].qpm if last_tempo else 120.0))
                res.time_signatures.append(symusic.TimeSignature(0, meter[0], meter[1]))
            _place(res, dec, start, None, offset, chords)
            out.append(res)
        return out

    def _context_state(self, g: _Grammar, ids: Sequence[int], total: int) -> _State:
        """The grammar state after context ``ids`` (followed, not judged), for ``total`` bars in
        all, the next id forced to open a bar."""
        st = _State(total=total)
        for i in ids:
            g.track(st, self.vocab.seqs[i])
        if ids and st.phase not in (TSIG, TEMPO, DUR):  # (a complete bar always ends in one of these)
            st.phase = DUR
        st.forced = (frozenset(["Bar_None"]),)  # the new bars start on a bar line
        return st

    def _prompt_programs(self, orig: "symusic.Score", cfg: GenerationConfig) -> tuple[int, ...]:
        """The instruments of new notes: ``cfg.instruments``, else the prompt's own programs."""
        if cfg.instruments is not None:
            return self._programs(cfg.instruments)
        used = sorted({-1 if t.is_drum else t.program for t in orig.tracks if t.notes})
        return tuple(p for p in used if p in self.vocab.programs) or self.default_programs

    def infill(self, score: Any, first_bar: int, last_bar: int, context_bars: int = 4,
               cfg: GenerationConfig | None = None) -> list["symusic.Score"]:
        """Rewrite bars ``first_bar``..``last_bar`` (1-based, inclusive) of a clip: every note
        that starts outside them stays as it was (notes held into them from before included),
        the notes that start inside are replaced by new ones, which end by the span's end.
        The result has the clip's length, tempo, meter and instruments (new notes go to the
        clip's programs unless ``cfg.instruments`` says otherwise).

        The model reads the span's surroundings as it learnt to in training (fill in the
        middle): up to ``context_bars`` bars before the span, ``FIM_suffix``, up to
        ``context_bars`` bars after it, ``FIM_middle``; then it writes the span's bars.
        ``cfg.chords`` apply to the span (cycled from its first bar); ``cfg.key`` None means
        the clip's own key.

        Example: ``out = gen.infill("clip.mid", 5, 8, cfg=GenerationConfig(seed=1))``
        """
        from miditok.utils import get_bars_ticks

        _check_context_bars(context_bars)
        for v in (first_bar, last_bar):
            if isinstance(v, bool) or not isinstance(v, int):
                raise BadInputError(f"infill: bars must be whole bar numbers, got {v!r}")
        if first_bar < 1 or last_bar < first_bar:
            raise BadInputError(f"infill: bars {first_bar}-{last_bar} are not a span of bars "
                                "(write the first and the last bar, counted from 1, like 5-8)")
        span = last_bar - first_bar + 1
        if span > MAX_BARS:
            raise BadInputError(f"infill: {span} bars is more than {MAX_BARS} at once")
        cfg = _with(cfg, {"bars": span})
        if cfg.form is not None:
            raise BadInputError("infill rewrites bars of a clip; a form applies to a new piece")
        cfg.validate()
        orig, cfg, shift, meter, all_bars, tempos = self._read_prompt(score, cfg, "infill")
        bars_orig = get_bars_ticks(orig)
        n_orig = len(bars_orig)
        if last_bar > n_orig:
            raise BadInputError(f"infill: bars {first_bar}-{last_bar} reach past the clip's end (it has "
                                f"{n_orig} bar{'s' if n_orig != 1 else ''})")
        meter_sigs = {(t.numerator, t.denominator) for t in orig.time_signatures}
        if len(meter_sigs) > 1:
            raise BadInputError("infill: the clip changes meter; melodia infills clips of one meter")
        s0, s1 = first_bar - 1, last_bar
        pre0 = max(0, s0 - context_bars)
        before = self._encode_context(all_bars[pre0:s0], tempos[pre0] if pre0 > 0 else None)
        after = self._encode_context(all_bars[s1:s1 + context_bars], tempos[s1] if not before and s1 < len(tempos) else None)
        cond, uncond, _ = self._controls(cfg)
        if after:  # fill in the middle: before, FIM_suffix, after, FIM_middle → the span
            fim = self.tok.fim_ids()
            if "suffix" not in fim or "middle" not in fim:
                raise BadInputError("this model was not trained to fill in bars (it has no FIM tokens); "
                                    "retrain or fine-tune it with melodia 0.2's tokenizer")
            ctx = [*before, fim["suffix"], *after, fim["middle"]]
        else:  # the span ends the clip: a continuation of the bars before it
            ctx = before
        progs = self._prompt_programs(orig, cfg)
        g = self.grammar(meter, progs)
        n_ctx = s0 - pre0 if before and not after else 0  # bars the grammar follows before the new ones
        st = self._context_state(g, before if n_ctx else [], n_ctx + span)
        st.plan = tuple((b + n_ctx, p, c) for b, p, c in self.chord_plan(cfg, meter))  # bars after the context
        states = [st.copy() for _ in range(cfg.n)]
        new = self._sample(g, [*cond, *ctx], [*uncond, *ctx], states, cfg)

        t0 = bars_orig[s0]
        t1 = bars_orig[s1] if s1 < len(bars_orig) else bars_orig[-1] + orig.ticks_per_quarter * 4 * meter[0] // meter[1]
        out = []
        for row in new:
            dec, start, chords = self._new_notes((before if n_ctx else []) + row, n_ctx, shift)
            res = orig.copy()
            for tr in res.tracks:  # the notes that start in the span go
                kept = [nt for nt in tr.notes if not t0 <= nt.time < t1]
                if len(kept) != len(tr.notes):
                    tr.notes.clear()
                    for nt in kept:
                        tr.notes.append(nt)
            marks = [m for m in res.markers if not t0 <= m.time < t1]
            res.markers.clear()
            for m in marks:
                res.markers.append(m)
            _place(res, dec, start, t1, t0, chords)
            out.append(res)
        return out

    # ------------------------------------------------------------------ the loop
    def _sample(self, g: _Grammar, cond: list[int], uncond: list[int], states: list[_State],
                cfg: GenerationConfig, stop_after: int | None = None) -> list[list[int]]:
        """The sampling loop: prefill, then one grammar-masked step per new id for all rows.

        ``stop_after`` (benchmarks) stops after that many steps, finished or not.
        """
        import torch

        n = len(states)
        guided = cfg.guidance != 1.0 and list(cond) != list(uncond)  # no mood/key: nothing to guide
        rows = [list(cond) for _ in range(n)] + ([list(uncond) for _ in range(n)] if guided else [])
        budget = cfg.token_budget()
        # form: a returning section copies the ids of its letter's first section (all its bars,
        # or all but the last with ``vary``); copied ids are fed, not sampled, and cost no budget
        copies = {first + 1: (src + 1, size - int(cfg.vary)) for _, first, size, src in cfg.sections()
                  if src is not None and size - int(cfg.vary) > 0}
        bar_at: list[dict[int, int]] = [{} for _ in range(n)]   # bar (1..) → index in out[r] that opened it
        queue: list[list[int]] = [[] for _ in range(n)]        # ids still to copy
        need_bar = [False] * n   # a copy just ended: the next id opens a bar (or ends the piece)
        sampled = [0] * n
        bar_or_end = None
        if copies:
            bar_or_end = torch.zeros(self.vocab.size, dtype=torch.bool)
            bar_or_end[self._bar_ids] = True
            bar_or_end[EOS_ID] = True
        net = self.net
        window = max(64, net.window)
        length = min(window, len(cond) + (2 if copies else 1) * budget + 1)
        n_ctrl = len(self.tok.controls_prefix("any", None, list(cfg.tags)))
        if len(cond) >= length:  # a long prompt: keep the controls and its most recent part
            keep = length // 2
            rows = [r[:n_ctrl] + r[-(keep - n_ctrl):] for r in rows]
        gen = torch.Generator()
        if cfg.seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(cfg.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        out: list[list[int]] = [[] for _ in range(n)]
        scale = float(cfg.guidance)
        in_key = self.in_key_mask(cond[2], cfg.leading_tone) if cfg.in_key and len(cond) > 2 else None
        with torch.inference_mode():
            net.reset(len(rows), length)
            logits = net.forward(torch.tensor(rows, dtype=torch.long), 0)
            for step in range(2 * budget + 64 if copies else budget):
                if logits.device.type != "cpu":
                    logits = logits.cpu()  # masks and the seeded draw live on the CPU
                if guided:
                    lu = logits[n:]
                    logits = lu + scale * (logits[:n] - lu)
                masks = []
                for r, st in enumerate(states):
                    if queue[r]:  # copying: whatever is drawn is replaced
                        masks.append(g.eos_only)
                        continue
                    left = budget - sampled[r]
                    finish = left <= g.finish_needed(st) + 2 * max(len(st.plan) - 1, 0)
                    m = g.mask(st, finish)
                    pm = g.plan_mask(st) if st.plan else None
                    if pm is not None and bool((m & pm).any()):
                        m = m & pm
                    if st.plan and st.plan[-1][2] < 0 and cfg.chord_tones:  # chords asked for: notes on their tones
                        cm = g.chord_tone_mask(st, free_program=min(g.programs) if len(g.programs) > 1 else None)
                        if cm is not None and bool((m & cm).any()):
                            m = m & cm
                    if need_bar[r] and bool((m & bar_or_end).any()):
                        m = m & bar_or_end
                    masks.append(m)
                mask = masks[0].unsqueeze(0) if n == 1 else torch.stack(masks)
                ends = mask[:, EOS_ID]
                if bool(ends.any()):
                    # In the last bar the model's wish to start another bar means "end here":
                    # EOS gets that mass too (else it went to more notes crammed into the last beat)
                    bars = logits.index_select(1, self._bar_ids)
                    both = torch.logaddexp(logits[:, EOS_ID], torch.logsumexp(bars, dim=1))
                    logits = logits.clone()
                    logits[:, EOS_ID] = torch.where(ends, both, logits[:, EOS_ID])
                if in_key is not None:
                    keyed = mask & in_key
                    mask = torch.where(keyed.any(1, keepdim=True), keyed, mask)  # never leave a row empty
                ids = _sample_ids(logits, mask, cfg.temperature, cfg.top_k, cfg.top_p, gen)
                for r, (st, i) in enumerate(zip(states, ids)):
                    if st.done:
                        ids[r] = EOS_ID
                        continue
                    opens = g.vocab.seqs[i][0][0] == BAR
                    if copies and opens and not queue[r] and st.bar + 1 in copies:  # a section returns
                        src, size = copies[st.bar + 1]
                        queue[r] = out[r][bar_at[r][src]:bar_at[r].get(src + size, len(out[r]))]
                    if queue[r]:
                        i = ids[r] = queue[r].pop(0)
                        if g.vocab.seqs[i][0][0] == BAR:
                            bar_at[r][st.bar + 1] = len(out[r])
                        g.track(st, g.vocab.seqs[i])
                        out[r].append(i)
                        if not queue[r]:  # copied: the chords it brought need no plan
                            need_bar[r] = True
                            st.plan = tuple(p for p in st.plan if p[0] > st.bar or p[2] < 0)
                        continue
                    if opens:
                        bar_at[r][st.bar + 1] = len(out[r])
                        need_bar[r] = False
                    sampled[r] += 1
                    if not g.advance(st, g.vocab.seqs[i]):  # pragma: no cover - a bug if it happens
                        raise RuntimeError(f"generate: sampled illegal id {i} ({self.tok.id_to_token(i)})")
                    if st.plan and i == st.plan[0][2] and st.bar == st.plan[0][0]:
                        st.plan = st.plan[1:]
                    out[r].append(i)
                if all(st.done for st in states) or (stop_after is not None and step + 1 >= stop_after):
                    break
                feed = ids + ids if guided else ids
                for r, i in zip(rows, feed):
                    r.append(i)
                if net.pos + 1 > length:  # cache full: keep the controls and the recent half
                    keep = length // 2
                    rows = [r[:n_ctrl] + r[-(keep - n_ctrl):] for r in rows]
                    net.reset(len(rows), length)
                    logits = net.forward(torch.tensor(rows, dtype=torch.long), 0)
                else:
                    logits = net.step(torch.tensor(feed, dtype=torch.long))
        for r, st in enumerate(states):
            if not st.done and stop_after is None:  # pragma: no cover - finishing mode makes this unreachable
                raise RuntimeError("generate: token budget ran out before the last bar was complete")
        return out


def _check_context_bars(context_bars: Any) -> None:
    if isinstance(context_bars, bool) or not isinstance(context_bars, int) or not 1 <= context_bars <= MAX_BARS:
        raise BadInputError(f"context_bars {context_bars!r}: must be an integer from 1 to {MAX_BARS}")


def _place(res: "symusic.Score", dec: "symusic.Score", start: int | None, end: int | None, offset: int,
           chords: list) -> None:
    """Copy the notes of ``dec`` from tick ``start`` on into ``res`` at ``offset`` (rescaled to
    ``res``'s resolution; each note into the track of its program, made if missing), cut at
    ``end`` (a tick of ``res``) when given, and the new chords as markers. A new note that
    would start while a note of ``res`` of the same pitch and track still sounds is left out:
    MIDI cannot hold both, and the note already there is kept whole."""
    import symusic

    if start is None:
        return
    scale = res.ticks_per_quarter / dec.ticks_per_quarter
    held: dict[tuple[bool, int, int], int] = {}  # (drum, program, pitch) → tick its note sounds until
    for t in res.tracks:
        for nt in t.notes:
            if nt.time < offset < nt.time + nt.duration:
                k = (t.is_drum, t.program, nt.pitch)
                held[k] = max(held.get(k, 0), nt.time + nt.duration)
    for tr in dec.tracks:
        notes = [nt for nt in tr.notes if nt.time >= start]
        if not notes:
            continue
        target = next((t for t in res.tracks if t.is_drum == tr.is_drum
                       and (tr.is_drum or t.program == tr.program)), None)
        if target is None:
            res.tracks.append(symusic.Track(tr.name, program=tr.program, is_drum=tr.is_drum))
            target = res.tracks[-1]
        for nt in notes:
            on = offset + round((nt.time - start) * scale)
            off = offset + round((nt.time - start + nt.duration) * scale)
            if end is not None:
                if on >= end:
                    continue
                off = min(off, end)
            if on < held.get((target.is_drum, target.program, nt.pitch), -1):
                continue
            target.notes.append(symusic.Note(on, max(1, off - on), nt.pitch, nt.velocity))
        target.notes.sort(key=lambda x: (x.time, x.pitch))
    for tick, name in chords:
        res.markers.append(symusic.TextMeta(offset + round((tick - start) * scale), name))
    res.markers.sort(key=lambda m: m.time)


def _sample_ids(logits: "torch.Tensor", mask: "torch.Tensor", temperature: float, top_k: int, top_p: float,
                gen: "torch.Generator") -> list[int]:
    """One id per row from grammar-masked logits with temperature, top-k, then top-p.

    Cheap at batch 1: no full sort of the vocabulary (the nucleus is looked for among the best
    64 ids first, and only when those hold less than ``top_p`` of the mass among all legal ids),
    and the draw is an inverse-CDF lookup of one uniform number per row from ``gen``
    (``torch.multinomial`` costs several times more here).
    """
    import torch

    x = logits.masked_fill(~mask, float("-inf"))
    if temperature != 1.0:
        x = x / temperature
    idx = None
    if top_k > 0:  # top-k first; top-p then works on the renormalised top-k (as transformers does)
        k = min(top_k, int(mask.sum(1).max()))
        x, idx = x.topk(k, dim=-1)
        probs = torch.softmax(x, dim=-1)
    elif top_p < 1.0:
        probs = None
        k_legal = int(mask.sum(1).max())
        for k in ((64, k_legal) if k_legal > 64 else (k_legal,)):
            vals, idx = x.topk(k, dim=-1)  # best first
            # probabilities under the whole (legal) distribution, so the nucleus is exact
            probs = (vals - torch.logsumexp(x, dim=-1, keepdim=True)).exp_()
            if k == k_legal or bool((probs.sum(-1) >= top_p).all()):
                break
        x = vals
    else:
        probs = torch.softmax(x, dim=-1)
    cum = probs.cumsum(-1)
    if top_p < 1.0:
        probs = probs.masked_fill(cum - probs >= top_p, 0.0)  # keeps at least the best id
        cum = probs.cumsum(-1)
    u = (1.0 - torch.rand((x.shape[0], 1), generator=gen)) * cum[:, -1:]   # in (0, total]
    j = torch.searchsorted(cum, u).clamp_max_(x.shape[1] - 1)
    if idx is not None:
        j = idx.gather(-1, j)
    return j.view(-1).tolist()


def generate_scores(model: Any, tokenizer: "MelodiaTokenizer", cfg: GenerationConfig | None = None,
                    device: str = "cpu", **overrides: Any) -> list["symusic.Score"]:
    """One call from a model and tokenizer to decoded scores.

    Example:
        >>> scores = generate_scores(model, tok, bars=8, mood="calm", key="F major", n=2, seed=1)
    """
    return Generator(model, tokenizer, device=device).generate_scores(cfg, **overrides)
