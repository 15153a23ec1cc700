"""The network: presets and model directories (:mod:`.llama`), the lean forward pass used for
sampling (:mod:`.lean`) and its TorchScript step (:mod:`.leanstep`, loaded on first use: it
imports torch).

Example:
    >>> from melodia.model import build_model, load_model_dir, DEFAULT_MODEL_DIR
    >>> model, meta = load_model_dir(DEFAULT_MODEL_DIR)
"""
from __future__ import annotations

from ..fileio import make_temp_dir, recover_dir, replace_dir
from .lean import FP16_MIN_ELEMENTS, LeanLlama
from .llama import (
                    DEFAULT_MODEL_DIR,
                    MAX_VOCAB,
                    MODEL_FILES,
                    NORM_EPS,
                    PRESETS,
                    ROPE_THETA,
                    ModelConfig,
                    build_model,
                    count_parameters,
                    get_preset,
                    llama_config,
                    load_inference_weights,
                    load_model_dir,
                    model_config_of,
                    preset_name,
                    read_model_meta,
                    save_model_dir,
)

__all__ = [
    "DEFAULT_MODEL_DIR", "FP16_MIN_ELEMENTS", "MAX_VOCAB", "MODEL_FILES", "NORM_EPS", "PRESETS", "ROPE_THETA",
    "LeanLlama", "ModelConfig", "build_model", "count_parameters", "get_preset", "llama_config",
    "load_inference_weights", "load_model_dir", "make_temp_dir", "model_config_of", "preset_name",
    "read_model_meta", "recover_dir", "replace_dir", "save_model_dir",
]
