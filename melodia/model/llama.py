"""The network: size presets on transformers' ``LlamaForCausalLM``, and the model directory.

Why Llama (and not GPT-2): rotary position embeddings (RoPE, theta 10000) encode only relative
offsets, so a model trained on 1,024-token chunks can still generate a little past that length,
where GPT-2's learned absolute positions simply end; RMSNorm, a SwiGLU MLP and no biases are the
current standard recipe and train a little better per parameter; the input embedding and the
output layer share one matrix (``tie_word_embeddings``), which matters when the vocabulary is a
large share of a small model; grouped-query attention (``n_kv_head < n_head``) is available to
shrink the KV cache. The lean forward pass (:class:`melodia.model.lean.LeanLlama`) relies on exactly
this layout.

Presets (parameters with a 3,000–4,000 token vocabulary):

=====  =======  ====  =======  ==========  ====  =======  ==========================
name   n_layer  d     n_head   n_kv_head   d_ff  max_len  parameters
=====  =======  ====  =======  ==========  ====  =======  ==========================
tiny   2        64    4        2           176   512      ~0.3 M (tests; GQA path)
small  6        320   5        5           640   1024     ~7.1–7.5 M (shipped, ~15 MB bf16)
base   8        512   8        8           1408  1024     ~25–28 M
large  12       768   12       12          2048  2048     ~87 M
=====  =======  ====  =======  ==========  ====  =======  ==========================

A model directory (see docs/ARCHITECTURE.md) holds ``config.json`` + ``model.safetensors``
(written by ``save_pretrained``, so ``AutoModelForCausalLM.from_pretrained(dir)`` loads it),
``tokenizer.json`` and ``melodia.json``.

Example:
    >>> model = build_model("tiny", vocab_size=3100)
    >>> save_model_dir(model, "out/model", "tokens/tokenizer.json", {"preset": "tiny"})
    >>> model, meta = load_model_dir("out/model")
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, BadModelError
from ..fileio import make_temp_dir, replace_dir
from ..version import __version__

if TYPE_CHECKING:  # heavy imports stay inside functions
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

#: Where the shipped default model lives (built by ``scripts/train_default.py``).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "melodia.json")
ROPE_THETA = 10000.0
NORM_EPS = 1e-5
MAX_VOCAB = 65535  # uint16 shards


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the network; one place to change a hyper-parameter.

    Example:
        >>> ModelConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=256, d_ff=704, max_len=1024)
    """

    n_layer: int
    n_head: int
    n_kv_head: int
    d_model: int
    d_ff: int
    max_len: int

    def validate(self) -> None:
        """Raise :class:`BadInputError` on a shape transformers cannot build."""
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise BadInputError(f"model config: {f.name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head:
            raise BadInputError(f"model config: d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.n_head % self.n_kv_head:
            raise BadInputError(f"model config: n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}")


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_ff=176, max_len=512),
    "small": ModelConfig(n_layer=6, n_head=5, n_kv_head=5, d_model=320, d_ff=640, max_len=1024),
    "base": ModelConfig(n_layer=8, n_head=8, n_kv_head=8, d_model=512, d_ff=1408, max_len=1024),
    "large": ModelConfig(n_layer=12, n_head=12, n_kv_head=12, d_model=768, d_ff=2048, max_len=2048),
}


def get_preset(preset: str | ModelConfig) -> ModelConfig:
    """A preset by name (or a :class:`ModelConfig` passed through). Example: ``get_preset("small")``."""
    if isinstance(preset, ModelConfig):
        preset.validate()
        return preset
    if preset not in PRESETS:
        raise BadInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def llama_config(mc: ModelConfig, vocab_size: int, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2) -> "LlamaConfig":
    """The transformers config for a shape and a vocabulary. Example: ``llama_config(PRESETS["tiny"], 3100)``."""
    from transformers import LlamaConfig

    mc.validate()
    if not isinstance(vocab_size, int) or not 8 <= vocab_size <= MAX_VOCAB:
        raise BadInputError(f"vocab_size must be an integer in [8, {MAX_VOCAB}], got {vocab_size!r}")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=mc.d_model, intermediate_size=mc.d_ff,
        num_hidden_layers=mc.n_layer, num_attention_heads=mc.n_head, num_key_value_heads=mc.n_kv_head,
        head_dim=mc.d_model // mc.n_head, max_position_embeddings=mc.max_len, hidden_act="silu",
        rms_norm_eps=NORM_EPS, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, tie_word_embeddings=True,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, use_cache=True,
    )


def model_config_of(config: "LlamaConfig") -> ModelConfig:
    """The :class:`ModelConfig` a transformers config was built from. Example: ``model_config_of(model.config)``."""
    return ModelConfig(n_layer=config.num_hidden_layers, n_head=config.num_attention_heads,
                       n_kv_head=config.num_key_value_heads, d_model=config.hidden_size,
                       d_ff=config.intermediate_size, max_len=config.max_position_embeddings)


def preset_name(mc: ModelConfig) -> str | None:
    """The name of the preset equal to ``mc``, or None. Example: ``preset_name(PRESETS["tiny"]) == "tiny"``."""
    return next((name for name, p in PRESETS.items() if p == mc), None)


def build_model(preset: str | ModelConfig, vocab_size: int, attn_implementation: str = "sdpa",
                seed: int | None = None) -> "LlamaForCausalLM":
    """A freshly initialised model (fp32, CPU) of a preset's shape.

    Example:
        >>> model = build_model("tiny", vocab_size=3100)
    """
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(get_preset(preset), vocab_size)
    config._attn_implementation = attn_implementation
    if seed is not None:
        torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_parameters(model: "torch.nn.Module", trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied matrix counts once). Example: ``count_parameters(model)``."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # .parameters() already yields a shared tensor once
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _dtype_of(dtype: "str | torch.dtype | None") -> "torch.dtype | None":
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise BadInputError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    return table[dtype]


@contextlib.contextmanager
def _quiet_hub():
    """No transformers progress bars while saving/loading one small file."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def save_model_dir(model: "torch.nn.Module", out_dir: str | os.PathLike, tokenizer_json_path: str | os.PathLike,
                   meta: dict[str, Any], dtype: "str | torch.dtype | None" = None) -> Path:
    """Write a model directory atomically: built in a temp folder beside ``out_dir``, then renamed.

    ``dtype`` ("bfloat16", "float16", "float32" or a torch dtype) converts the saved weights,
    not ``model``. A PEFT model must be merged first (``merge_and_unload``).

    Example:
        >>> save_model_dir(model, "runs/a/model", "tokens/tokenizer.json", {"preset": "small"}, dtype="bfloat16")
    """
    out_dir = Path(out_dir)
    tokenizer_json_path = Path(tokenizer_json_path)
    if not tokenizer_json_path.is_file():
        raise BadModelError(f"{tokenizer_json_path}: tokenizer.json not found")
    if not hasattr(model, "save_pretrained") or getattr(model.config, "model_type", None) != "llama":
        raise BadInputError("save_model_dir: expected a transformers LlamaForCausalLM (merge LoRA adapters first)")
    torch_dtype = _dtype_of(dtype)
    meta = {"format": 1, "version": __version__, **meta}
    mc = model_config_of(model.config)
    meta.setdefault("preset", preset_name(mc))
    meta.setdefault("model_config", asdict(mc))
    meta.setdefault("parameters", count_parameters(model))
    json.dumps(meta)  # fail before writing anything if meta is not JSON

    tmp = make_temp_dir(out_dir)
    try:
        to_save = model
        if torch_dtype is not None and torch_dtype != next(model.parameters()).dtype:
            to_save = copy.deepcopy(model).to(torch_dtype)  # keeps `model` as it is; config.dtype follows
        with _quiet_hub():
            to_save.save_pretrained(tmp, safe_serialization=True)
        if not (tmp / "model.safetensors").is_file():
            raise BadModelError(f"{out_dir}: save_pretrained did not write one model.safetensors "
                                f"(got {sorted(p.name for p in tmp.iterdir())})")
        shutil.copyfile(tokenizer_json_path, tmp / "tokenizer.json")
        with open(tmp / "melodia.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _check_config(path: Path, cfg: dict) -> None:
    def bad(msg: str) -> BadModelError:
        return BadModelError(f"{path / 'config.json'}: {msg}")

    if cfg.get("model_type") != "llama":
        raise bad(f"model_type is {cfg.get('model_type')!r}, melodia models are 'llama'")
    ints = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    for key in ints:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise bad(f"{key} must be a positive integer, got {v!r}")
    if cfg["vocab_size"] > MAX_VOCAB:
        raise bad(f"vocab_size {cfg['vocab_size']} exceeds {MAX_VOCAB}")
    kv = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if not isinstance(kv, int) or kv <= 0 or cfg["num_attention_heads"] % kv:
        raise bad(f"num_key_value_heads {kv!r} does not divide num_attention_heads {cfg['num_attention_heads']}")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise bad(f"hidden_size {cfg['hidden_size']} is not divisible by num_attention_heads")


def _read_model_dir(path: Path) -> dict[str, dict]:
    """The directory's JSON files, checked; a clear BadModelError for anything missing or wrong."""
    if not path.is_dir():
        raise BadModelError(f"{path}: model directory not found")
    for name in MODEL_FILES:
        if not (path / name).is_file():
            raise BadModelError(f"{path}: {name} is missing (a model directory holds {', '.join(MODEL_FILES)})")
    jsons = {}
    for name in ("config.json", "melodia.json", "tokenizer.json"):
        try:
            jsons[name] = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadModelError(f"{path / name}: not readable JSON ({e})") from None
        if not isinstance(jsons[name], dict):
            raise BadModelError(f"{path / name}: expected a JSON object")
    return jsons


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A model directory's ``melodia.json``, checked as a load checks it, without reading the
    weights (what a command needs to know before the seconds a load takes).

    Example: ``read_model_meta("runs/pop/model")["preset"]  # 'small'``
    """
    return _read_model_dir(Path(path))["melodia.json"]


class _Namespace:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


def load_inference_weights(path: str | os.PathLike, device: str = "cpu") -> "tuple[Any, dict[str, Any]]":
    """Just what sampling needs, without importing ``transformers`` (seconds of start-up saved):
    ``(model-like object with .config and the Llama weight tree, melodia.json as a dict)``.

    The object answers ``config``, ``model.layers[i].self_attn.q_proj.weight`` …,
    ``get_input_embeddings()`` and ``get_output_embeddings()`` like ``LlamaForCausalLM`` does,
    which is all :class:`melodia.model.lean.LeanLlama` reads. Same checks as :func:`load_model_dir`.

    Example:
        >>> model, meta = load_inference_weights("melodia/weights/default")
    """
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    jsons = _read_model_dir(path)
    cfg = jsons["config.json"]
    _check_config(path, cfg)
    wfile = path / "model.safetensors"
    try:
        sd = load_file(str(wfile), device="cpu")
    except Exception as e:  # truncated files, bad headers
        raise BadModelError(f"{wfile}: cannot load weights ({type(e).__name__}: {e})") from None
    d, v, ff = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    h = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or h
    hd = cfg.get("head_dim") or d // h
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                       p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, h * hd),
                       p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d),
                       p + "mlp.down_proj.weight": (d, ff), p + "input_layernorm.weight": (d,),
                       p + "post_attention_layernorm.weight": (d,)})
    bad = [k for k, shp in shapes.items() if k not in sd or tuple(sd[k].shape) != shp]
    if bad:
        raise BadModelError(f"{wfile}: weights missing or of the wrong shape: {bad[:5]}")

    def w(key: str) -> Any:
        return _Namespace(weight=sd[key].to(torch.device(device)))

    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append(_Namespace(
            self_attn=_Namespace(**{n: w(p + f"self_attn.{n}.weight") for n in ("q_proj", "k_proj", "v_proj", "o_proj")}),
            mlp=_Namespace(**{n: w(p + f"mlp.{n}.weight") for n in ("gate_proj", "up_proj", "down_proj")}),
            input_layernorm=w(p + "input_layernorm.weight"),
            post_attention_layernorm=w(p + "post_attention_layernorm.weight")))
    emb = w("model.embed_tokens.weight")
    head = w("lm_head.weight") if "lm_head.weight" in sd and not cfg.get("tie_word_embeddings", True) else emb
    inner = _Namespace(layers=layers, norm=w("model.norm.weight"), embed_tokens=emb)
    model = _Namespace(config=_Namespace(**cfg), model=inner, get_input_embeddings=lambda: emb,
                       get_output_embeddings=lambda: head)
    return model, jsons["melodia.json"]


def load_model_dir(path: str | os.PathLike, device: "str | torch.device" = "cpu",
                   dtype: "str | torch.dtype | None" = None,
                   attn_implementation: str = "sdpa") -> "tuple[LlamaForCausalLM, dict[str, Any]]":
    """Load a model directory; returns ``(model in eval mode, melodia.json as a dict)``.

    Raises :class:`BadModelError` naming the directory and the missing or wrong file.
    ``dtype`` None keeps the dtype the weights were saved in.

    Example:
        >>> model, meta = load_model_dir("melodia/weights/default")
    """
    import torch

    path = Path(path)
    jsons = _read_model_dir(path)
    _check_config(path, jsons["config.json"])
    torch_dtype = _dtype_of(dtype)

    from transformers import LlamaForCausalLM

    try:
        with _quiet_hub():
            model, info = LlamaForCausalLM.from_pretrained(
                path, dtype=torch_dtype if torch_dtype is not None else "auto",
                attn_implementation=attn_implementation, output_loading_info=True)
    except Exception as e:  # safetensors header errors, shape mismatches ...
        raise BadModelError(f"{path / 'model.safetensors'}: cannot load weights ({type(e).__name__}: {e})") from None
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    if missing or info.get("mismatched_keys"):
        raise BadModelError(f"{path / 'model.safetensors'}: weights missing or of the wrong shape: "
                            f"{(missing + list(info.get('mismatched_keys') or []))[:5]}")
    model.to(torch.device(device))
    model.eval()
    return model, jsons["melodia.json"]
