"""Validate and measure a JSONL fine-tuning dataset before it is uploaded.

Formats (finetune-api.md section 9): conversational ``{"messages": [...]}`` whose last message is
the assistant's, instruction ``{"prompt", "completion"}``, text ``{"text"}`` and pre-tokenized
``{"token_ids", "labels"?}``. Errors name the file and the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError

ROLES = ("system", "user", "assistant", "tool")
MAX_PROBLEMS = 5
# a rough, tokenizer-free estimate; the engine calibrates it against jobs' trained_tokens
BYTES_PER_TOKEN = 4.0


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    sha256: str
    bytes: int
    n_examples: int
    n_tokens: int  # estimate
    format: str


def inspect_dataset(path: Path, *, field: str) -> DatasetInfo:
    """Check every line of a JSONL dataset; count examples and estimate tokens."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{field}: no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc}") from exc
    problems: list[str] = []
    formats: set[str] = set()
    n_examples = 0
    n_tokens = 0
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            text = raw.decode("utf-8")
            obj = json.loads(text)
        except UnicodeDecodeError:
            problems.append(f"{where}: not UTF-8")
            continue
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:  # json's C parser has a depth limit
            problems.append(f"{where}: JSON nested too deeply")
            continue
        fmt, error = _check_example(obj)
        if error:
            problems.append(f"{where}: {error}")
            continue
        formats.add(fmt)
        n_examples += 1
        n_tokens += _estimate_tokens(obj, len(raw))
        if len(problems) >= MAX_PROBLEMS:
            break
    if not problems and n_examples == 0:
        problems.append(f"{path.name}: no examples (the file is empty)")
    if not problems and len(formats) > 1:
        problems.append(f"{path.name}: mixes formats ({', '.join(sorted(formats))}); use one")
    if problems:
        raise ConfigError([f"{field}: {p}" for p in problems])
    return DatasetInfo(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        n_examples=n_examples,
        n_tokens=max(n_tokens, 1),
        format=formats.pop(),
    )


def _check_example(obj: Any) -> tuple[str, str | None]:
    if not isinstance(obj, dict):
        return "", "each line must be a JSON object"
    if "messages" in obj:
        return "conversational", _check_messages(obj["messages"], obj.get("tools"))
    if "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                return "instruction", f"'{key}' must be a string"
        if not obj["completion"].strip():
            return "instruction", "'completion' is empty"
        return "instruction", None
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            return "text", "'text' must be a non-empty string"
        return "text", None
    if "token_ids" in obj:
        ids = obj["token_ids"]
        if not isinstance(ids, list) or not ids or not all(_is_int(t) and t >= 0 for t in ids):
            return "pre-tokenized", "'token_ids' must be a non-empty list of token ids"
        labels = obj.get("labels")
        if labels is not None and (
            not isinstance(labels, list)
            or len(labels) != len(ids)
            or not all(_is_int(t) for t in labels)
        ):
            return "pre-tokenized", "'labels' must be a list of ints as long as 'token_ids'"
        return "pre-tokenized", None
    keys = ", ".join(sorted(obj)) or "none"
    return (
        "",
        f"unknown example format (keys: {keys}); "
        "expected messages, prompt/completion, text or token_ids",
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_messages(messages: Any, tools: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if tools is not None and not isinstance(tools, list):
        return "'tools' must be a list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object"
        role = m.get("role")
        if role not in ROLES:
            return f"messages[{i}].role: {role!r} is not one of {', '.join(ROLES)}"
        content = m.get("content")
        if content is None and not m.get("tool_calls"):
            return f"messages[{i}].content is missing"
        if content is not None and not isinstance(content, str):
            return f"messages[{i}].content must be a string"
    last = messages[-1]
    if last.get("role") != "assistant":
        return "the last message must be from the assistant"
    if last.get("tool_calls") or not (last.get("content") or "").strip():
        return "the last message must be the assistant's natural-language answer"
    return None


def _estimate_tokens(obj: dict[str, Any], n_bytes: int) -> int:
    if "token_ids" in obj:
        return len(obj["token_ids"])
    return max(1, round(n_bytes / BYTES_PER_TOKEN))
