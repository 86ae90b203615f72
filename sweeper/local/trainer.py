"""Real training of a tiny byte-level language model, numpy only, on the CPU.

The model predicts the next byte from three features of the bytes so far: the embedding of the
current byte, of the previous byte, and the mean embedding over a causal window. A tanh hidden
layer maps them to logits over the 258-token vocabulary (``sweeper.local.datasets``)::

    f = [E[x_t], E[x_{t-1}], mean(E[x_{t-w+1..t}])]    h = tanh(f W1 + b1)    p = softmax(h W2 + b2)

Every hyperparameter changes the computation:

- ``learning_rate``: the AdamW step size is ``learning_rate * LR_SCALE`` (``LR_SCALE = 100``), so
  the learning rates one uses on a hosted 8B model (1e-5 .. 1e-3) land in the range where the tiny
  model trains slowly .. well; around 1e-2 and above it diverges. Warmup rises linearly over
  ``round(warmup_ratio * total_steps)`` steps, then the rate decays linearly towards zero.
- ``n_epochs``, ``batch_size`` (rows per step), ``weight_decay`` (decoupled, AdamW, on matrices),
  ``max_grad_norm`` (global norm clipping), ``seed`` (row order, adapter init, dropout masks).
- ``context_length`` is scaled down for a model that reads bytes: a row holds
  ``context_length // 64`` tokens (8192 -> 128, 131072 -> 2048) and the causal window of the mean
  feature is ``context_length // 512`` tokens (8192 -> 16).
- ``packing``: true concatenates the examples into full rows (a window may span two examples);
  false gives each example its own row (truncated to the row length), padded per batch.
- ``lora``: true freezes the base (embeddings, W1, W2, biases) and trains low-rank adapters
  ``W + (lora_alpha / lora_r) * A B`` on W1 and W2 (A random, B zero at start), with
  ``lora_dropout`` on the adapters' input; false trains every weight (full fine-tuning).

The base weights are a deterministic function of the Nebius model name. A loss that turns NaN/inf
or exceeds :data:`DIVERGED_LOSS` raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sweeper.local.catalog import LocalBase
from sweeper.local.datasets import VOCAB, Example

LR_SCALE = 100.0
DIVERGED_LOSS = 4 * math.log(VOCAB)  # about 22; a fresh model starts near log(258) = 5.55
VALID_SAMPLE_ROWS = 16

Array = NDArray[np.float32]
Params = dict[str, Array]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded."""


class Stopped(Exception):
    """A hook asked training to stop (cancel, shutdown, injected failure)."""


@dataclass(frozen=True)
class HParams:
    """The hyperparameters of a supervised job, defaults as Nebius fills them."""

    batch_size: int = 8
    learning_rate: float = 1e-5
    n_epochs: int = 3
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    packing: bool = True
    max_grad_norm: float = 1.0
    context_length: int = 8192
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.0

    @property
    def row_len(self) -> int:
        return max(8, self.context_length // 64)

    @property
    def window(self) -> int:
        return max(2, self.context_length // 512)


@dataclass
class Metrics:
    step: int
    train_loss: float
    train_mean_token_accuracy: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Hooks:
    """Callbacks of one training run; any may raise :class:`Stopped`."""

    on_step: Callable[[int, int, int], None] = lambda step, total, tokens: None
    on_epoch: Callable[[int, Metrics, Params], None] = lambda epoch, metrics, params: None


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def base_weights(base: LocalBase) -> Params:
    """The frozen base model: a deterministic function of the Nebius model name."""
    rng = np.random.default_rng(_seed_of(base.name))
    d, h = base.d_embed, base.d_hidden
    f = 3 * d
    return {
        "E": (rng.standard_normal((VOCAB, d)) * 0.5).astype(np.float32),
        "W1": (rng.standard_normal((f, h)) / math.sqrt(f)).astype(np.float32),
        "b1": np.zeros(h, np.float32),
        "W2": (rng.standard_normal((h, VOCAB)) / math.sqrt(h)).astype(np.float32),
        "b2": np.zeros(VOCAB, np.float32),
    }


# --- rows and batches -------------------------------------------------------------------------


@dataclass
class Rows:
    tokens: list[NDArray[np.int64]] = field(default_factory=list)
    weights: list[NDArray[np.float32]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


def build_rows(examples: list[Example], hp: HParams) -> Rows:
    """Rows of at most ``row_len + 1`` tokens (inputs and shifted targets)."""
    n = hp.row_len + 1
    rows = Rows()
    if hp.packing:
        toks = np.fromiter((t for ex in examples for t in ex.tokens), np.int64)
        wts = np.fromiter((w for ex in examples for w in ex.weights), np.float32)
        for start in range(0, max(len(toks) - 1, 1), hp.row_len):
            rows.tokens.append(toks[start : start + n])
            rows.weights.append(wts[start : start + n])
    else:
        for ex in examples:
            rows.tokens.append(np.asarray(ex.tokens[:n], np.int64))
            rows.weights.append(np.asarray(ex.weights[:n], np.float32))
    keep = [i for i, w in enumerate(rows.weights) if len(w) > 1 and w[1:].any()]
    return Rows([rows.tokens[i] for i in keep], [rows.weights[i] for i in keep])


def _batch(rows: Rows, idx: list[int]) -> tuple[NDArray[np.int64], NDArray[np.int64], Array]:
    width = max(len(rows.tokens[i]) for i in idx) - 1
    x = np.zeros((len(idx), width), np.int64)
    y = np.zeros((len(idx), width), np.int64)
    m = np.zeros((len(idx), width), np.float32)
    for r, i in enumerate(idx):
        t, w = rows.tokens[i], rows.weights[i]
        k = len(t) - 1
        x[r, :k], y[r, :k], m[r, :k] = t[:-1], t[1:], w[1:]
    return x, y, m


# --- the model --------------------------------------------------------------------------------


class TinyLM:
    """Forward and backward passes of the model, with optional LoRA adapters."""

    def __init__(self, base: Params, hp: HParams, rng: np.random.Generator) -> None:
        self.base = base
        self.hp = hp
        self.rng = rng
        self.scale = hp.lora_alpha / hp.lora_r
        if hp.lora:
            f, h = base["W1"].shape
            v = base["W2"].shape[1]
            r = hp.lora_r
            self.trainable: Params = {
                "A1": (rng.standard_normal((f, r)) / math.sqrt(f)).astype(np.float32),
                "B1": np.zeros((r, h), np.float32),
                "A2": (rng.standard_normal((h, r)) / math.sqrt(h)).astype(np.float32),
                "B2": np.zeros((r, v), np.float32),
            }
        else:
            self.trainable = {k: v.copy() for k, v in base.items()}

    def weights(self) -> Params:
        return self.base if self.hp.lora else self.trainable

    def _features(self, x: NDArray[np.int64]) -> tuple[Array, Array]:
        emb = self.weights()["E"][x]  # (B, T, d)
        prev = np.zeros_like(emb)
        prev[:, 1:] = emb[:, :-1]
        w = self.hp.window
        cs = np.cumsum(emb, axis=1)
        ws = cs.copy()
        ws[:, w:] -= cs[:, :-w]
        counts = np.minimum(np.arange(1, x.shape[1] + 1), w).astype(np.float32)
        wm = ws / counts[None, :, None]
        f = np.concatenate([emb, prev, wm], axis=2).reshape(-1, 3 * emb.shape[2])
        return f, counts

    def _dropout(self, a: Array, train: bool) -> Array | None:
        """The inverted-dropout multiplier for ``a`` (None: no dropout)."""
        p = self.hp.lora_dropout
        if not train or p <= 0:
            return None
        if p >= 1:
            return np.zeros_like(a)
        return (self.rng.random(a.shape) >= p).astype(np.float32) / np.float32(1 - p)

    def loss_and_grads(
        self, x: NDArray[np.int64], y: NDArray[np.int64], m: Array, train: bool = True
    ) -> tuple[float, float, Params]:
        """Masked mean cross-entropy, token accuracy and gradients of the trainable params."""
        p, lora, s = self.weights(), self.hp.lora, self.scale
        t = self.trainable
        f, counts = self._features(x)
        keep1 = self._dropout(f, train) if lora else None
        fd = f if keep1 is None else f * keep1
        z1 = f @ p["W1"] + p["b1"]
        if lora:
            u1 = fd @ t["A1"]
            z1 = z1 + s * (u1 @ t["B1"])
        h = np.tanh(z1)
        keep2 = self._dropout(h, train) if lora else None
        hd = h if keep2 is None else h * keep2
        logits = h @ p["W2"] + p["b2"]
        if lora:
            u2 = hd @ t["A2"]
            logits = logits + s * (u2 @ t["B2"])
        mask = m.reshape(-1)
        total = float(mask.sum())
        logits = logits - logits.max(axis=1, keepdims=True)
        expl = np.exp(logits)
        probs = expl / expl.sum(axis=1, keepdims=True)
        yy = y.reshape(-1)
        rows = np.arange(len(yy))
        nll = -np.log(np.maximum(probs[rows, yy], 1e-30))
        loss = float((nll * mask).sum() / total)
        acc = float(((logits.argmax(axis=1) == yy) * mask).sum() / total)
        if not train:
            return loss, acc, {}
        dlog = probs
        dlog[rows, yy] -= 1.0
        dlog *= (mask / total)[:, None]
        g: Params = {}
        if lora:
            g["B2"] = s * (u2.T @ dlog)
            du2 = s * (dlog @ t["B2"].T)
            g["A2"] = hd.T @ du2
            dhd = du2 @ t["A2"].T
            dh = dlog @ p["W2"].T + (dhd if keep2 is None else dhd * keep2)
            dz1 = dh * (1.0 - h * h)
            g["B1"] = s * (u1.T @ dz1)
            g["A1"] = fd.T @ (s * (dz1 @ t["B1"].T))
            return loss, acc, g
        g["W2"] = h.T @ dlog
        g["b2"] = dlog.sum(axis=0)
        dz1 = (dlog @ p["W2"].T) * (1.0 - h * h)
        g["W1"] = f.T @ dz1
        g["b1"] = dz1.sum(axis=0)
        g["E"] = self._embedding_grad(x, dz1 @ p["W1"].T, counts)
        return loss, acc, g

    def _embedding_grad(self, x: NDArray[np.int64], df: Array, counts: Array) -> Array:
        b, n = x.shape
        d = self.base["E"].shape[1]
        df3 = df.reshape(b, n, 3 * d)
        de = df3[:, :, :d].copy()
        de[:, :-1] += df3[:, 1:, d : 2 * d]
        dws = df3[:, :, 2 * d :] / counts[None, :, None]
        # ws[t] sums e[t-w+1..t], so e[s] receives dws[s..s+w-1]: a reversed window sum.
        rc = np.cumsum(dws[:, ::-1], axis=1)[:, ::-1]
        win = rc.copy()
        w = self.hp.window
        win[:, :-w] -= rc[:, w:]
        de += win
        grad = np.zeros_like(self.base["E"])
        np.add.at(grad, x.reshape(-1), de.reshape(-1, d))
        return grad


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a job will do, known before its first step."""

    steps_per_epoch: int
    total_steps: int


def plan(train: list[Example], hp: HParams) -> Plan:
    rows = len(build_rows(train, hp))
    per_epoch = max(1, math.ceil(rows / hp.batch_size))
    return Plan(per_epoch, per_epoch * hp.n_epochs)


def _lr(hp: HParams, step: int, total: int) -> float:
    peak = hp.learning_rate * LR_SCALE
    warm = round(hp.warmup_ratio * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (total - step) / max(1, total - warm)


def _evaluate(model: TinyLM, rows: Rows, batch: int) -> tuple[float, float]:
    losses, accs, weights = [], [], []
    for start in range(0, len(rows), batch):
        idx = list(range(start, min(start + batch, len(rows))))
        x, y, m = _batch(rows, idx)
        loss, acc, _ = model.loss_and_grads(x, y, m, train=False)
        losses.append(loss)
        accs.append(acc)
        weights.append(float(m.sum()))
    total = sum(weights)
    return (
        sum(lo * w for lo, w in zip(losses, weights, strict=True)) / total,
        sum(a * w for a, w in zip(accs, weights, strict=True)) / total,
    )


def train(
    base: LocalBase,
    hp: HParams,
    seed: int,
    train_examples: list[Example],
    valid_examples: list[Example] | None,
    hooks: Hooks,
    weights: Params | None = None,
) -> Metrics:
    """Train one job to the end; returns the last epoch's metrics.

    ``weights`` overrides the base weights (tests pass them to check what changes); the
    arrays passed are never modified. Raises TrainingDiverged, or whatever a hook raises.
    """
    rng = np.random.default_rng(seed)
    model = TinyLM(base_weights(base) if weights is None else weights, hp, rng)
    rows = build_rows(train_examples, hp)
    valid = build_rows(valid_examples, hp) if valid_examples else Rows()
    sample = Rows(valid.tokens[:VALID_SAMPLE_ROWS], valid.weights[:VALID_SAMPLE_ROWS])
    pl = plan(train_examples, hp)
    opt_m = {k: np.zeros_like(v) for k, v in model.trainable.items()}
    opt_v = {k: np.zeros_like(v) for k, v in model.trainable.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    step, tokens = 0, 0
    metrics = Metrics(step=0, train_loss=float("nan"), train_mean_token_accuracy=0.0)
    with np.errstate(all="ignore"):
        for epoch in range(1, hp.n_epochs + 1):
            order = rng.permutation(len(rows))
            losses, accs = [], []
            for start in range(0, len(rows), hp.batch_size):
                idx = [int(i) for i in order[start : start + hp.batch_size]]
                x, y, m = _batch(rows, idx)
                loss, acc, grads = model.loss_and_grads(x, y, m)
                if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                    raise TrainingDiverged(
                        f"Training diverged at step {step + 1}: loss={loss:.4g}; "
                        "lower the learning rate"
                    )
                norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
                clip = min(1.0, hp.max_grad_norm / (norm + 1e-12))
                lr = _lr(hp, step, pl.total_steps)
                step += 1
                for k, g in grads.items():
                    g = g * clip
                    opt_m[k] = b1 * opt_m[k] + (1 - b1) * g
                    opt_v[k] = b2 * opt_v[k] + (1 - b2) * g * g
                    mhat = opt_m[k] / (1 - b1**step)
                    vhat = opt_v[k] / (1 - b2**step)
                    w = model.trainable[k]
                    if hp.weight_decay and w.ndim == 2:
                        w *= 1 - lr * hp.weight_decay
                    w -= (lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
                losses.append(loss)
                accs.append(acc)
                tokens += int(sum(len(rows.tokens[i]) - 1 for i in idx))
                hooks.on_step(step, pl.total_steps, tokens)
            metrics = Metrics(step, float(np.mean(losses)), float(np.mean(accs)))
            if len(valid):
                metrics.valid_loss, metrics.valid_mean_token_accuracy = _evaluate(
                    model, sample, hp.batch_size
                )
                metrics.full_valid_loss, metrics.full_valid_mean_token_accuracy = _evaluate(
                    model, valid, hp.batch_size
                )
                if not math.isfinite(metrics.full_valid_loss):
                    raise TrainingDiverged(f"Validation loss is {metrics.full_valid_loss}")
            hooks.on_epoch(epoch, metrics, model.trainable)
    return metrics


def save_weights(params: Params) -> bytes:
    """The trained parameters as an ``.npz`` archive (what a checkpoint's result file holds)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **params)  # type: ignore[arg-type]
    return buf.getvalue()


def weights_info(hp: HParams) -> dict[str, Any]:
    """A short description of what trains, for the job's events."""
    return {"lora": hp.lora, "row_len": hp.row_len, "window": hp.window}
