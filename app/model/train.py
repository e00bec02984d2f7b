"""Training data from synthetic ticks and a small numpy MLP (no deep-learning framework).

The ticks come from ``app.synthetic``'s session-aware process (hours of trading across
session opens, with halts), through the real ``FeatureEngine`` built with the same
``FeatureParams`` the service will serve with. Labels are the direction of each
tick's forward log return over ``horizon`` ticks: ``down``/``flat``/``up`` split at the
1/3 quantile of its magnitude, so the classes are balanced. A tick whose horizon
crosses a session open or a halt is not labelled (its forward return is the jump, which
no feature can know). Training is plain mini-batch Adam on cross-entropy with a fixed
seed: the same arguments always give the same weights.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.features import FeatureEngine
from app.model.contract import N_CLASSES, N_INPUTS, model_inputs
from app.sessions import SessionTable
from app.settings.features import DEFAULT_VENUE, FeatureParams
from app.synthetic import TRAINING_MARKET, MarketParams, synthetic_market


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32 [n, N_INPUTS]
    y: np.ndarray  # int64 [n] class index, or float32 [n, N_CLASSES] soft targets

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_dataset(
    n_symbols: int,
    ticks_per_symbol: int,
    *,
    seed: int,
    horizon: int = 10,
    features: FeatureParams | None = None,
    market: MarketParams | None = None,
    venue: str = DEFAULT_VENUE,
) -> Dataset:
    """Features of synthetic ticks (through the real FeatureEngine) with forward-return labels;
    the ticks follow ``market`` (default ``TRAINING_MARKET``: random start phases)."""
    sessions = SessionTable.for_symbols(n_symbols, venue)
    synthetic = synthetic_market(n_symbols, ticks_per_symbol, seed=seed,
                                 params=market or TRAINING_MARKET, sessions=sessions)  # fmt: skip
    ticks, log_price = synthetic.ticks, synthetic.log_price
    engine = FeatureEngine.from_params(n_symbols, features or FeatureParams(), sessions)
    x, warm = model_inputs(engine.update(ticks.symbol, ticks.price, ticks.size, ticks.ts_ns))
    # Index of each tick in its symbol's own series (ticks are interleaved).
    order = np.argsort(ticks.symbol, kind="stable")
    k = np.empty(len(ticks), dtype=np.int64)
    k[order] = np.arange(len(ticks)) - np.repeat(
        np.r_[0, np.cumsum(np.bincount(ticks.symbol, minlength=n_symbols))[:-1]],
        np.bincount(ticks.symbol, minlength=n_symbols),
    )
    # Breaks (opens, halts) up to each tick: equal counts at k and k + horizon mean none between.
    breaks_before = np.cumsum(synthetic.breaks != 0, axis=1)
    s, kk = ticks.symbol, np.minimum(k + horizon, ticks_per_symbol - 1)
    usable = warm & (k + horizon < ticks_per_symbol) & (breaks_before[s, kk] == breaks_before[s, k])
    s, kk = ticks.symbol[usable], k[usable]
    forward = log_price[s, kk + horizon] - np.log(ticks.price[usable])
    threshold = np.quantile(np.abs(forward), 1.0 / 3.0)
    y = np.where(forward > threshold, 2, np.where(forward < -threshold, 0, 1)).astype(np.int64)
    return Dataset(x=x[usable], y=y)


@dataclass
class MLP:
    """Weights of ``inputs → (Linear, ReLU)* → Linear → softmax`` plus input standardisation."""

    mean: np.ndarray  # float32 [N_INPUTS]
    std: np.ndarray  # float32 [N_INPUTS]
    weights: list[np.ndarray] = field(default_factory=list)  # W: [fan_in, fan_out]
    biases: list[np.ndarray] = field(default_factory=list)

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = (x.astype(np.float32) - self.mean) / self.std
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(x))

    @property
    def n_parameters(self) -> int:
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


WeightTransform = Callable[[np.ndarray], np.ndarray]


def train_mlp(
    data: Dataset,
    *,
    hidden: tuple[int, ...] = (128, 128),
    epochs: int = 8,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    init: MLP | None = None,
    weight_transform: WeightTransform | None = None,
    match_logits: bool = False,
    anneal: bool = False,
) -> MLP:
    """Mini-batch Adam on softmax cross-entropy; deterministic for a given seed.

    With ``init`` training continues from a copy of that model. With
    ``weight_transform`` the forward pass uses ``weight_transform(W)`` (e.g. fake
    quantisation) and its gradient is passed straight through to ``W``
    (quantisation-aware training). With ``match_logits`` the targets ``data.y`` are
    another model's logits and the loss is their squared error (distillation). With
    ``anneal`` the learning rate decays linearly to zero over the run.
    """
    rng = np.random.default_rng(seed)
    x = data.x.astype(np.float32)
    if init is None:
        mean = x.mean(axis=0)
        std = x.std(axis=0) + np.float32(1e-12)
        mlp = MLP(mean=mean.astype(np.float32), std=std.astype(np.float32))
        sizes = (N_INPUTS, *hidden, N_CLASSES)
        for fan_in, fan_out in itertools.pairwise(sizes):  # He initialisation
            mlp.weights.append(
                (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            )
            mlp.biases.append(np.zeros(fan_out, dtype=np.float32))
    else:
        mlp = copy.deepcopy(init)
    xn = (x - mlp.mean) / mlp.std
    params = [p for pair in zip(mlp.weights, mlp.biases, strict=True) for p in pair]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = len(data)
    total_steps = epochs * -(-n // batch_size)
    onehot = np.eye(N_CLASSES, dtype=np.float32)
    for _ in range(epochs):
        perm = rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = perm[lo : lo + batch_size]
            weights = (
                mlp.weights
                if weight_transform is None
                else [weight_transform(w) for w in mlp.weights]
            )
            target = data.y[idx] if data.y.ndim == 2 else onehot[data.y[idx]]
            grads = _gradients(weights, mlp.biases, xn[idx], target, match_logits)
            step += 1
            lr_t = learning_rate * np.sqrt(1 - beta2**step) / (1 - beta1**step)
            if anneal:
                lr_t *= 1.0 - (step - 1) / total_steps
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                if p.ndim == 2:
                    g = g + weight_decay * p
                m1[i] = beta1 * m1[i] + (1 - beta1) * g
                m2[i] = beta2 * m2[i] + (1 - beta2) * (g * g)
                p -= (lr_t * m1[i] / (np.sqrt(m2[i]) + eps)).astype(np.float32)
    return mlp


def _gradients(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    xn: np.ndarray,
    target: np.ndarray,
    match_logits: bool = False,
) -> list[np.ndarray]:
    """Gradients of the mean loss w.r.t. [W0, b0, W1, b1, ...] for one mini-batch.

    The loss is softmax cross-entropy against ``target`` probabilities, or with
    ``match_logits`` half the squared error against ``target`` logits.
    """
    activations = [xn]
    h = xn
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        if i < last:
            h = np.maximum(h, 0.0)
        activations.append(h)
    delta = ((h if match_logits else _softmax(h)) - target) / xn.shape[0]
    grads: list[np.ndarray] = []
    for i in range(last, -1, -1):
        grads.append(delta.sum(axis=0))  # bias
        grads.append(activations[i].T @ delta)  # weight
        if i > 0:
            delta = (delta @ weights[i].T) * (activations[i] > 0)
    grads.reverse()  # now [W0, b0, W1, b1, ...]
    return grads


def distill_quantized(
    teacher: MLP,
    x: np.ndarray,
    fake_quant: WeightTransform,
    *,
    epochs: int = 3,
    learning_rate: float = 5e-4,
    seed: int = 1,
) -> MLP:
    """A student whose fake-quantised weights reproduce the teacher's decisions.

    Quantisation-aware distillation: start from the teacher, train with the forward
    pass on ``fake_quant(W)`` against the teacher's probabilities, and return the
    student with its weights snapped to the quantisation grid (so exporting it to the
    quantised format loses nothing further).
    """
    targets = Dataset(x=x, y=teacher.predict_proba(x).astype(np.float32))
    student = train_mlp(
        targets,
        epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=0.0,
        seed=seed,
        init=teacher,
        weight_transform=fake_quant,
        anneal=True,
    )
    student.weights = [fake_quant(w) for w in student.weights]
    return student


def accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == y).mean())
