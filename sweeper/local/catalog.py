"""The models the local service accepts: Nebius names, each mapped to a tiny local base model.

A base model's weights are a deterministic function of its Nebius name (see
:func:`sweeper.local.trainer.base_weights`), so two services, or one service before and after a
restart, train from bit-identical bases. Bigger Nebius models map to (slightly) wider tiny models.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalBase:
    """A tiny byte-level language model standing in for a hosted base model."""

    name: str  # the Nebius model id clients send
    local_name: str  # what actually trains here
    d_embed: int  # embedding width
    d_hidden: int  # hidden layer width


_SMALL = (24, 64)
_MEDIUM = (32, 96)
_LARGE = (40, 128)

_SIZES: dict[str, tuple[int, int]] = {
    "meta-llama/Llama-3.1-8B-Instruct": _SMALL,
    "meta-llama/Llama-3.1-8B": _SMALL,
    "meta-llama/Llama-3.1-70B-Instruct": _LARGE,
    "meta-llama/Llama-3.1-70B": _LARGE,
    "meta-llama/Llama-3.3-70B-Instruct": _LARGE,
    "meta-llama/Llama-3.2-1B-Instruct": _SMALL,
    "meta-llama/Llama-3.2-3B-Instruct": _SMALL,
    "Qwen/Qwen3-0.6B": _SMALL,
    "Qwen/Qwen3-4B": _SMALL,
    "Qwen/Qwen3-8B": _SMALL,
    "Qwen/Qwen3-14B": _MEDIUM,
    "Qwen/Qwen3-32B": _MEDIUM,
    "Qwen/Qwen3-30B-A3B-Instruct-2507": _MEDIUM,
    "Qwen/Qwen2.5-7B-Instruct": _SMALL,
    "Qwen/Qwen2.5-72B-Instruct": _LARGE,
    "unsloth/gpt-oss-20b-BF16": _MEDIUM,
    "unsloth/gpt-oss-120b-BF16": _LARGE,
}


def _local(name: str, size: tuple[int, int]) -> LocalBase:
    label = {_SMALL: "s", _MEDIUM: "m", _LARGE: "l"}[size]
    return LocalBase(name, f"tiny-byte-mlp-{label}", size[0], size[1])


MODELS: dict[str, LocalBase] = {name: _local(name, size) for name, size in _SIZES.items()}


def lookup(name: str) -> LocalBase | None:
    """The local base standing in for ``name``, or None when the service does not know it."""
    return MODELS.get(name)
