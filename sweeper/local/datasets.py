"""Parse and tokenize fine-tuning JSONL the way the provider validates it (finetune-api.md s. 9).

Four line shapes are accepted: conversational (``messages``), instruction (``prompt`` and
``completion``), text (``text``) and pre-tokenized (``token_ids`` with optional ``labels``).
Tokens are bytes (0-255) plus ``BOS`` and ``EOS``; pre-tokenized ids are taken modulo 256.

Each example becomes ``(tokens, weights)``: ``weights[i]`` is 1 when token ``i`` is a training
target. As providers do, only the assistant's replies (conversational) and the completion
(instruction) are trained on; text examples are trained on entirely.

A problem raises :class:`DatasetError` whose message names the 1-based line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BOS = 256
EOS = 257
VOCAB = 258
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


class DatasetError(ValueError):
    """The file is not a valid fine-tuning dataset; the message names the line."""


@dataclass(frozen=True)
class Example:
    tokens: list[int]
    weights: list[int]


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def _conversation(obj: dict[str, Any], where: str) -> Example:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list")
    tokens, weights = [BOS], [0]
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DatasetError(f"{where}: messages[{i}] must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise DatasetError(f"{where}: messages[{i}].role must be one of {sorted(ROLES)}")
        content = msg.get("content")
        if content is None and (role == "assistant" and msg.get("tool_calls")):
            content = json.dumps(msg["tool_calls"], sort_keys=True)
        if not isinstance(content, str):
            raise DatasetError(f"{where}: messages[{i}].content must be a string")
        head = _bytes(f"<{role}>")
        body = [*_bytes(content), EOS]
        train = 1 if role == "assistant" else 0
        tokens += head + body
        weights += [0] * len(head) + [train] * len(body)
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        raise DatasetError(f"{where}: the last message must be a plain assistant message")
    if not last["content"]:
        raise DatasetError(f"{where}: the last assistant message is empty")
    return Example(tokens, weights)


def _instruction(obj: dict[str, Any], where: str) -> Example:
    prompt, completion = obj["prompt"], obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DatasetError(f"{where}: 'prompt' and 'completion' must both be strings")
    head, body = [BOS, *_bytes(prompt)], [*_bytes(completion), EOS]
    return Example(head + body, [0] * len(head) + [1] * len(body))


def _text(obj: dict[str, Any], where: str) -> Example:
    text = obj["text"]
    if not isinstance(text, str) or not text:
        raise DatasetError(f"{where}: 'text' must be a non-empty string")
    body = [*_bytes(text), EOS]
    return Example([BOS, *body], [0] + [1] * len(body))


def _pretokenized(obj: dict[str, Any], where: str) -> Example:
    ids, labels = obj["token_ids"], obj.get("labels")
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
        raise DatasetError(f"{where}: 'token_ids' must be a non-empty list of integers")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(ids)):
        raise DatasetError(f"{where}: 'labels' must be a list as long as 'token_ids'")
    weights = [1] * len(ids) if labels is None else [0 if lb == -100 else 1 for lb in labels]
    return Example([t % 256 for t in ids], weights)


_KINDS = (
    ("messages", "conversational", _conversation),
    ("prompt", "instruction", _instruction),
    ("text", "text", _text),
    ("token_ids", "pre-tokenized", _pretokenized),
)


def parse(content: bytes) -> tuple[str, list[Example]]:
    """The dataset kind and its examples; raises DatasetError naming the first bad line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the file is not UTF-8 (byte {exc.start})") from exc
    kind: str | None = None
    examples: list[Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: each line must be a JSON object")
        for key, name, build in _KINDS:
            if key in obj:
                if kind is not None and name != kind:
                    raise DatasetError(f"{where}: a {name} example in a {kind} dataset")
                kind = name
                examples.append(build(obj, where))
                break
        else:
            raise DatasetError(
                f"{where}: expected one of 'messages', 'prompt'/'completion', 'text', 'token_ids'"
            )
    if kind is None:
        raise DatasetError("the file has no examples")
    if not any(any(ex.weights[1:]) for ex in examples):
        raise DatasetError("no example has a token to train on")
    return kind, examples
