"""Entropy model: a learned factorized density and exact integer coding tables.

Training uses :class:`FactorizedDensity` (Balle et al. 2018, the
"non-parametric" per-channel density) on the *un-gained* latent ``y``. A rate
level with gain ``g`` quantizes ``z = round(y * g)``, so symbol ``q`` covers
``y`` in ``[(q - 1/2) / g, (q + 1/2) / g)``: one density serves every point of
the continuous rate knob.

For coding, :func:`build_tables` evaluates that density once, after training,
into integer frequency tables on a grid of gains per channel, and
:func:`fit_choice` picks, from training latents, which table codes each knob
position (a grid of ``LEVEL_STEP``), channel and *context*: each value's
context is its magnitude as predicted from already-coded neighbours
(:func:`context_ids`, with a linear predictor :func:`fit_predictor` fits), so
a value in a busy region gets a wide table and one in a flat region a narrow
one. A second linear predictor (:func:`fit_predictor` with ``signed=True``)
predicts each value itself from the signed values around it, and the fitted
choice also says how much of that predicted mean to subtract before coding
(none where it does not pay, as for channels that are nearly always zero).
Everything is saved next to the weights and loaded as integers, so the
encoder and any decoder use bit-identical models whatever the machine or
thread count; the decoding path computes only with exact integers (the
contexts' weighted sums in float64, where integers below 2**53 are exact). The
coder itself is constriction's ANS coder.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import constriction
import keras
import numpy as np
from keras import layers, ops

from .errors import FormatError

#: Resolution of the continuous rate knob: levels are coded on this grid.
LEVEL_STEP = 0.05
#: Integer frequencies of each table sum to 2**PRECISION.
PRECISION = 16
#: Probability mass left outside a table's symbol range, coded by escapes.
TAIL = 1e-6
#: Largest alphabet per channel (values outside go through the escapes).
MAX_SYMBOLS = 4096


class FactorizedDensity(layers.Layer):
    """Per-channel learned CDF: a monotone 1-D network per latent channel."""

    def __init__(self, channels, filters=(3, 3, 3), init_scale=4.0, **kw):
        super().__init__(**kw)
        self.channels = channels
        self.filters = tuple(filters)
        self.init_scale = init_scale

    def build(self, _shape=None):
        if self.built:
            return
        f = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1.0 / (len(f) - 1))
        self.matrices, self.biases, self.factors = [], [], []
        for i in range(len(f) - 1):
            init = np.log(np.expm1(1.0 / scale / f[i + 1]))
            shape = (self.channels, f[i + 1], f[i])
            self.matrices.append(self.add_weight(shape=shape, initializer=keras.initializers.Constant(init), name=f"matrix{i}"))
            self.biases.append(
                self.add_weight(shape=shape[:2] + (1,), initializer=keras.initializers.RandomUniform(-0.5, 0.5), name=f"bias{i}")
            )
            if i < len(f) - 2:
                self.factors.append(self.add_weight(shape=shape[:2] + (1,), initializer="zeros", name=f"factor{i}"))
        self.built = True

    def logits_cdf(self, x):
        """Logit of the CDF at ``x``, shape (C, 1, n) -> (C, 1, n)."""
        logits = x
        for i, matrix in enumerate(self.matrices):
            logits = ops.matmul(ops.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + ops.tanh(self.factors[i]) * ops.tanh(logits)
        return logits

    def _logits_nhwc(self, x):
        shape = ops.shape(x)
        t = ops.reshape(ops.transpose(x, (3, 0, 1, 2)), (self.channels, 1, -1))
        t = self.logits_cdf(t)
        return ops.transpose(ops.reshape(t, (shape[3], shape[0], shape[1], shape[2])), (1, 2, 3, 0))

    def likelihood(self, z, gain):
        """Probability of the bin of width 1 around ``z = y * gain``.

        ``z`` is (B, h, w, C); ``gain`` broadcasts to it.
        """
        lower = self._logits_nhwc((z - 0.5) / gain)
        upper = self._logits_nhwc((z + 0.5) / gain)
        sign = ops.stop_gradient(-ops.sign(lower + upper))
        p = ops.abs(ops.sigmoid(sign * upper) - ops.sigmoid(sign * lower))
        return ops.maximum(p, 1e-9)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "filters": self.filters, "init_scale": self.init_scale}


@dataclass
class EntropyTables:
    """Integer coding tables: a grid of tables per latent channel, and which one
    each (knob position, context, channel) codes with.

    Grid row ``k`` of channel ``c`` is the learned density quantized with gain
    ``grid_gains(...)[k, c]``. It covers symbols ``q_min[k, c] .. q_min[k, c] + sizes[k, c] - 3``
    plus two escapes (index 0: below the range, last index: above it), with
    frequencies ``counts[starts[k, c] : starts[k, c] + sizes[k, c]]``.
    ``choice[j, x, c]`` is the row used at knob position ``j`` in context ``x``
    (:func:`context_ids`, which buckets the magnitude that ``predictor``
    predicts): a context that predicts small values picks a row with a smaller
    gain, i.e. a narrower distribution. ``shift[j, x, c]`` picks the share
    ``SHRINK[shift] / 4`` of the mean ``mean_predictor`` predicts that is
    subtracted, rounded, from each value before it is coded (:func:`means`).
    """

    q_min: np.ndarray  # (K, C) int32
    sizes: np.ndarray  # (K, C) int32, alphabet size including the 2 escapes
    counts: np.ndarray  # (total,) int32, each table sums to 2**PRECISION
    choice: np.ndarray  # (J, NUM_CONTEXTS, C) uint8
    predictor: np.ndarray  # (passes, C, C) int16, see fit_predictor
    mean_predictor: np.ndarray | None = None  # (passes, C, C) int16, see fit_predictor(signed=True); None: zeros
    shift: np.ndarray | None = None  # (J, NUM_CONTEXTS, C) uint8 index into SHRINK; None: zeros

    def __post_init__(self):
        if self.mean_predictor is None:
            self.mean_predictor = np.zeros_like(self.predictor)
        if self.shift is None:
            self.shift = np.zeros_like(self.choice)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes.ravel())[:-1]]).reshape(self.sizes.shape)
        self._models = {}

    @property
    def num_positions(self) -> int:
        return self.choice.shape[0]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf, q_min=self.q_min, sizes=self.sizes, counts=self.counts, choice=self.choice, predictor=self.predictor,
            mean_predictor=self.mean_predictor, shift=self.shift,
        )  # fmt: skip
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EntropyTables":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            choice = z["choice"].astype(np.uint8)
            if choice.ndim == 3 and (choice.shape[1] != NUM_CONTEXTS or "mean_predictor" not in z.files):
                raise ValueError(
                    "entropy tables: made for an older context model, this catcomp codes with "
                    f"{NUM_CONTEXTS} predicted-magnitude contexts and predicted means; rebuild them with "
                    "`catcomp train CATEGORY --tables-only --out MODEL_DIR`"
                )
            t = cls(
                *(z[k].astype(np.int32) for k in ("q_min", "sizes", "counts")), choice,
                *(z[k].astype(np.int16) for k in ("predictor", "mean_predictor")), z["shift"].astype(np.uint8),
            )  # fmt: skip
        C = t.q_min.shape[1]
        if t.choice.ndim != 3 or t.choice.shape[2] != C or t.choice.max() >= len(t.q_min):
            raise ValueError("entropy tables: inconsistent table choice")
        if t.predictor.shape != (len(_PASSES), C, C) or t.mean_predictor.shape != t.predictor.shape:
            raise ValueError("entropy tables: inconsistent context predictor")
        if t.shift.shape != t.choice.shape or t.shift.max(initial=0) >= len(SHRINK):
            raise ValueError("entropy tables: inconsistent mean shift")
        return t

    def model(self, k: int, c: int):
        """constriction model of grid row ``k`` of channel ``c`` (built once per process)."""
        m = self._models.get((k, c))
        if m is None:
            s = self.starts[k, c]
            freq = self.counts[s : s + self.sizes[k, c]].astype(np.float64)
            m = self._models[(k, c)] = constriction.stream.model.Categorical(freq, perfect=False)
        return m

    def bit_costs(self, c: int, radius: int) -> np.ndarray:
        """Bits of coding each value ``-radius..radius`` with each grid row of channel ``c``,
        shape (K, 2 * radius + 1); an escape costs its symbol plus 8 bits."""
        v = np.arange(-radius, radius + 1)
        out = np.empty((len(self.q_min), v.size), dtype=np.float32)
        for k in range(len(self.q_min)):
            s, n = self.starts[k, c], self.sizes[k, c]
            bits = -np.log2(self.counts[s : s + n] / float(1 << PRECISION))
            idx = v - self.q_min[k, c] + 1
            out[k] = bits[np.clip(idx, 0, n - 1)] + 8.0 * ((idx < 1) | (idx > n - 2))
        return out


def level_index(level: float, num_levels: int) -> int:
    """The knob grid position of a continuous ``level`` (clipped to range)."""
    return int(round(min(max(float(level), 0.0), num_levels - 1.0) / LEVEL_STEP))


# --- contexts -----------------------------------------------------------------
#
# Latent positions are of three kinds: A (row and column even), B (both odd) and
# N (the rest). The latent is coded in eight passes: A in four channel quarters,
# then B in two channel halves, then N in two halves (_PASSES). A value's context
# is its predicted magnitude, bucketed: a linear function (the tables'
# ``predictor``, fitted on training latents by :func:`fit_predictor`) of the mean
# |q| of every channel over the values of the 3 x 3 window around it (its own
# position included) that earlier passes coded. So the decoder derives exactly
# the contexts the encoder used, and in exact integer arithmetic: each mean is an
# integer times 1/2520 (2520 = lcm(1..9)), the weights are integers (x 2**12), and
# the weighted sums, taken as float64 for speed, are integers below 2**53, which
# float64 adds exactly in any order. Contexts: kind x NUM_BUCKETS + bucket.
# Each value's mean is predicted the same way from the signed window means (the
# tables' ``mean_predictor``); the share SHRINK[shift] / 4 of it that the tables'
# ``shift`` picks for the value's knob position, context and channel is rounded
# to an integer in exact integer arithmetic (:func:`means`) and subtracted from
# the value before coding.
# (Checkerboard and channel groups: He et al. 2021, He et al. 2022 "ELIC"; the
# predicted scale plays the part of their context network, here linear and counted.)

#: (kind, first channel quarter, end channel quarter) of each pass, in coding order.
_PASSES = ((0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4), (1, 0, 2), (1, 2, 4), (2, 0, 2), (2, 2, 4))
NUM_BUCKETS = 24
NUM_CONTEXTS = 3 * NUM_BUCKETS
_CAP = 4095  # |q| is counted at most this (far above every threshold)
_MEAN = 2520  # lcm(1..9): _MEAN x the mean of 1-9 integers is an integer
WEIGHT_BITS = 12  # predictor weights are integers, x 2**WEIGHT_BITS
#: Bucket edges of the predicted |q| in the units of the weighted sums (_MEAN x 2**WEIGHT_BITS):
#: 0.02 .. 12 in 22 geometric steps, rounded (np.rint(np.geomspace(0.02, 12, 23) * 2520 * 4096)).
_EDGES = np.array([
    206438, 276102, 369275, 493889, 660555, 883463, 1181594, 1580330, 2113622, 2826877, 3780824, 5056687,
    6763098, 9045349, 12097759, 16180224, 21640342, 28943012, 38710014, 51772952, 69244061, 92610906, 123863040,
], dtype=np.float64)  # fmt: skip
#: Quarters of the predicted mean a value's shift subtracts (index: the tables' ``shift``).
SHRINK = (0, 2, 3, 4)
#: Values coded per vectorized block (bounds the encoder's and decoder's work arrays).
BLOCK = 1 << 20


def _per_block(unit: int) -> int:
    """How many units of ``unit`` values make one block (at least one)."""
    return max(1, BLOCK // max(unit, 1))


def _kind(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Kind of position (y, x): 0 = A, 1 = B, 2 = N."""
    return np.where(y % 2 == x % 2, y % 2, 2)


def _kinds(h: int, w: int) -> np.ndarray:
    """Kind of each position of an h x w latent."""
    return _kind(np.arange(h)[:, None], np.arange(w)[None, :])


def _channels(i: int, C: int) -> range:
    _, a, b = _PASSES[i]
    return range(C * a // 4, C * b // 4)


def _positions(h: int, w: int, i: int) -> np.ndarray:
    """Flat positions of pass ``i``'s kind, in scan order."""
    return np.flatnonzero(_kinds(h, w).ravel() == _PASSES[i][0])


def _passes(h: int, w: int, C: int):
    """(pass index, flat positions, channel range, its columns among the pass's
    channels) in coding order.

    A pass's channels come in consecutive blocks of at most about BLOCK values, so
    that coding a very large latent never holds per-value work arrays for a whole pass."""
    out = []
    for i in range(len(_PASSES)):
        positions, channels = _positions(h, w, i), _channels(i, C)
        step = _per_block(len(positions))
        out += [(i, positions, channels[k : k + step], slice(k, k + step)) for k in range(0, len(channels), step)]
    return out


def _window_means(q: np.ndarray, i: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_MEAN x the mean |q|, and _MEAN x the mean q, of each channel over its values
    coded before pass ``i`` in the 3 x 3 window around each of ``positions``
    (values capped at +-_CAP), each shape (n, C) int64 (0 where none)."""
    h, w, C = q.shape
    before = np.zeros((3, C), dtype=bool)  # per kind and channel: coded before pass i
    for k, (kind, _, _) in enumerate(_PASSES[:i]):
        before[kind, _channels(k, C).start : _channels(k, C).stop] = True
    ys, xs = np.divmod(positions, w)
    s = np.zeros((len(positions), C), dtype=np.int64)
    signed = np.zeros((len(positions), C), dtype=np.int64)
    n = np.zeros((len(positions), C), dtype=np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
            coded = before[_kind(y, x)] & inside[:, None]
            v = np.clip(q[y, x], -_CAP, _CAP) * coded
            s += np.abs(v)
            signed += v
            n += coded
    scale = _MEAN // np.maximum(n, 1)
    return s * scale, signed * scale


def predictions(q: np.ndarray, i: int, predictor: np.ndarray, mean_predictor: np.ndarray | None = None):
    """The contexts of pass ``i``'s values of latent ``q`` (h, w, C), uint8, and
    their predicted means (int64, in units of 1 / (_MEAN x 2**WEIGHT_BITS); zeros
    without ``mean_predictor``), each shape (positions of the pass's kind in scan
    order, the pass's channels).

    Only values of passes before ``i`` are read, so the full latent and one
    decoded up to pass ``i`` give the same predictions. Worked out for blocks of
    about BLOCK values, so a very large latent needs no whole-latent work arrays."""
    h, w, C = q.shape
    cs, positions = _channels(i, C), _positions(h, w, i)
    weights = predictor[i][:, cs.start : cs.stop].astype(np.float64)
    mean_weights = None if mean_predictor is None else mean_predictor[i][:, cs.start : cs.stop].astype(np.float64)
    ctx = np.empty((len(positions), len(cs)), dtype=np.uint8)
    mean = np.zeros((len(positions), len(cs)), dtype=np.int64)
    step = _per_block(C)
    for k in range(0, len(positions), step):
        magnitude, signed = _window_means(q, i, positions[k : k + step])
        pred = magnitude.astype(np.float64) @ weights  # exact integers
        ctx[k : k + step] = _PASSES[i][0] * NUM_BUCKETS + np.searchsorted(_EDGES, pred, side="right")
        if mean_weights is not None:
            mean[k : k + step] = (signed.astype(np.float64) @ mean_weights).astype(np.int64)  # exact integers
    return ctx, mean


def context_ids(q: np.ndarray, i: int, predictor: np.ndarray) -> np.ndarray:
    """The contexts of pass ``i``'s values (:func:`predictions`)."""
    return predictions(q, i, predictor)[0]


def all_predictions(q: np.ndarray, predictor: np.ndarray, mean_predictor: np.ndarray | None = None):
    """The context and predicted mean (:func:`predictions`) of every value of latent ``q`` (h, w, C), each (h * w, C)."""
    h, w, C = q.shape
    ctx = np.zeros((h * w, C), dtype=np.uint8)
    mean = np.zeros((h * w, C), dtype=np.int64)
    for i in range(len(_PASSES)):
        cs, positions = _channels(i, C), _positions(h, w, i)
        ctx[positions, cs.start : cs.stop], mean[positions, cs.start : cs.stop] = predictions(q, i, predictor, mean_predictor)
    return ctx, mean


def all_contexts(q: np.ndarray, predictor: np.ndarray) -> np.ndarray:
    """The context of every value of latent ``q`` (h, w, C), shape (h * w, C)."""
    return all_predictions(q, predictor)[0]


def means(mean: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The integers subtracted before coding: ``SHRINK[shift] / 4`` of the predicted
    ``mean`` (:func:`predictions`), rounded half up, in exact integer arithmetic."""
    den = 4 * _MEAN << WEIGHT_BITS
    return (mean * np.asarray(SHRINK, dtype=np.int64)[shift] + den // 2) // den


def fit_predictor(latents, gains: np.ndarray, ridge: float = 1e-3, signed: bool = False) -> np.ndarray:
    """A predictor for each pass: least-squares weights (integers, x 2**WEIGHT_BITS)
    from the window means of the channels coded before it to the |q| of its own
    channels (the context predictor), or with ``signed`` from the signed window
    means to q itself (the mean predictor), on float latents ``latents``
    quantized with knob gains ``gains`` (C,). Shape (passes, C, C) int16."""
    C = len(gains)
    predictor = np.zeros((len(_PASSES), C, C), dtype=np.int16)
    qs = [np.rint(y * gains).astype(np.int64) for y in latents]
    for i in range(1, len(_PASSES)):  # the first pass has nothing to read
        cs, x, y = _channels(i, C), [], []
        for q in qs:
            positions = _positions(*q.shape[:2], i)
            x.append(_window_means(q, i, positions)[signed] / _MEAN)
            target = q.reshape(-1, C)[positions, cs.start : cs.stop]
            y.append((target if signed else np.abs(target)).astype(np.float64))
        x, y = np.concatenate(x), np.concatenate(y)
        weights = np.linalg.solve(x.T @ x + ridge * np.eye(C), x.T @ y)
        predictor[i][:, cs.start : cs.stop] = np.clip(np.rint(weights * (1 << WEIGHT_BITS)), -32767, 32767)
    return predictor


def _groups(ctx: np.ndarray, mean: np.ndarray, positions: np.ndarray, channels: range, tables: "EntropyTables", j: int):
    """A block of a pass's values in coding order: by channel, then context, then
    scan order. ``ctx`` and ``mean`` hold their contexts and predicted means (positions, channels).

    Returns flat positions, channels, grid rows, each value's table range (lowest
    symbol, alphabet size), the integer subtracted before coding it, and the
    bounds of the runs that share one (channel, context), each coded with one
    constriction call."""
    cs = np.asarray(channels)
    key = (cs[:, None] * NUM_CONTEXTS + ctx.T).ravel()
    order = np.argsort(key, kind="stable")
    key = key[order]
    ch, x = key // NUM_CONTEXTS, key % NUM_CONTEXTS
    rows = tables.choice[j, x, ch].astype(np.int64)
    mu = means(mean.T.ravel()[order], tables.shift[j, x, ch])
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1, [key.size]]) if key.size else np.zeros(1, int)
    return np.tile(positions, len(cs))[order], ch, rows, tables.q_min[rows, ch], tables.sizes[rows, ch], mu, bounds


# --- building the tables --------------------------------------------------------

#: Table gains of a channel form a geometric grid, GRID_PER_OCTAVE rows per octave,
#: from GRID_BELOW octaves under the channel's smallest knob gain to GRID_ABOVE over its largest.
GRID_PER_OCTAVE, GRID_BELOW, GRID_ABOVE = 4, 6, 2


def grid_gains(gains: np.ndarray) -> np.ndarray:
    """The (K, C) table gains for knob gains (J, C)."""
    lo, hi = gains.min(0), gains.max(0)
    K = int(np.ceil(np.log2(hi / lo).max() * GRID_PER_OCTAVE)) + (GRID_BELOW + GRID_ABOVE) * GRID_PER_OCTAVE + 1
    if K > 256:  # the choice is stored as uint8
        raise ValueError(f"knob gains span {np.log2(hi / lo).max():.1f} octaves: too wide for a table grid of 256 rows")
    return lo[None] * 2.0 ** ((np.arange(K)[:, None] - GRID_BELOW * GRID_PER_OCTAVE) / GRID_PER_OCTAVE)


def _quantiles(density: FactorizedDensity, target_logit: float) -> np.ndarray:
    """Per channel, the ``y`` where the CDF logit equals ``target_logit`` (bisection)."""
    lo = np.full(density.channels, -1e4)
    hi = np.full(density.channels, 1e4)
    for _ in range(60):
        mid = (lo + hi) / 2
        v = ops.convert_to_numpy(density.logits_cdf(mid[:, None, None].astype("float32")))[:, 0, 0]
        below = v < target_logit
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def _to_counts(pmf: np.ndarray) -> np.ndarray:
    """Probabilities -> positive integers summing exactly to 2**PRECISION."""
    total = 1 << PRECISION
    pmf = np.maximum(pmf, 0) / max(pmf.sum(), 1e-300)
    counts = np.floor(pmf * (total - len(pmf))).astype(np.int64) + 1
    counts[np.argmax(counts)] += total - counts.sum()
    return counts


def build_tables(density: FactorizedDensity, gains: np.ndarray) -> EntropyTables:
    """Evaluate ``density`` into integer tables for knob gains ``gains`` (J, C).

    Run once after training (CompressAI's ``update()``); the result is saved
    with the model and never recomputed at coding time. Every context starts
    with the grid row nearest to the knob's own gain and the predictor at zero;
    :func:`fit_predictor` and :func:`fit_choice` then fit both to real latents.
    """
    grid = grid_gains(gains)
    logit_tail = float(np.log(TAIL / 2 / (1 - TAIL / 2)))
    y_lo, y_hi = _quantiles(density, logit_tail), _quantiles(density, -logit_tail)
    K, C = grid.shape
    q_min = np.floor(y_lo[None] * grid).astype(np.int64)
    q_max = np.ceil(y_hi[None] * grid).astype(np.int64)
    q_max = np.minimum(q_max, q_min + MAX_SYMBOLS - 3)
    sizes = (q_max - q_min + 3).astype(np.int32)
    counts = []
    for k in range(K):
        kmax = int(sizes[k].max()) - 1  # number of bin edges
        # Edges e_0 .. e_{K-2} of the in-range bins, in y units, per channel.
        q = q_min[k][:, None] + np.arange(kmax)[None, :] - 0.5
        edges = (q / grid[k][:, None]).astype("float32")
        logits = ops.convert_to_numpy(density.logits_cdf(edges[:, None, :]))[:, 0, :].astype(np.float64)
        cdf = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the logistic function without overflow
        for c in range(C):
            n_edges = sizes[k, c] - 1
            cdf_c = np.concatenate([[0.0], cdf[c, :n_edges], [1.0]])
            cdf_c = np.maximum.accumulate(cdf_c)
            counts.append(_to_counts(np.diff(cdf_c)))
    nearest = np.rint(np.log2(gains / grid[0]) * GRID_PER_OCTAVE).astype(np.int64)  # (J, C)
    choice = np.repeat(nearest[:, None, :], NUM_CONTEXTS, axis=1).astype(np.uint8)
    predictor = np.zeros((len(_PASSES), C, C), dtype=np.int16)
    return EntropyTables(q_min.astype(np.int32), sizes, np.concatenate(counts).astype(np.int32), choice, predictor)


#: Values beyond +-FIT_RADIUS count as that value when fitting (they are rare).
FIT_RADIUS = 255


def fit_choice(tables: EntropyTables, gains: np.ndarray, latents, prior: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """For every knob position, context and channel, the grid row and the mean
    shift (an index into SHRINK) that code the float latents ``latents`` (list of
    (h, w, C) arrays from training images) in the fewest bits; returns ``(choice,
    shift)``. Each context's histogram is smoothed with ``prior`` values drawn
    from the channel's overall histogram, so rare contexts fall back to it. Ties go
    to the smallest shift, so tables without a mean predictor get shift 0."""
    C, radius = tables.q_min.shape[1], FIT_RADIUS
    costs = np.stack([tables.bit_costs(c, radius) for c in range(C)]).transpose(0, 2, 1)  # (C, V, K)
    V, K, S = 2 * radius + 1, len(tables.q_min), len(SHRINK)
    choice, shift = np.empty_like(tables.choice), np.empty_like(tables.choice)
    for j in range(len(gains)):
        idx = [[] for _ in SHRINK]
        for y in latents:
            q = np.clip(np.rint(y * gains[j]), -radius, radius).astype(np.int64)
            ctx, mean = all_predictions(q, tables.predictor, tables.mean_predictor)
            base = (ctx.astype(np.int64) * C + np.arange(C)) * V + radius
            for s in range(S):
                v = np.clip(q.reshape(-1, C) - means(mean, s), -radius, radius)
                idx[s].append((base + v).ravel())
        bits = np.empty((C, NUM_CONTEXTS, S, K), dtype=np.float32)
        for s in range(S):
            hist = np.bincount(np.concatenate(idx[s]), minlength=NUM_CONTEXTS * C * V).astype(np.float64).reshape(NUM_CONTEXTS, C, V)
            overall = hist.sum(0, keepdims=True)
            hist += prior * overall / np.maximum(overall.sum(-1, keepdims=True), 1)
            bits[:, :, s] = np.matmul(hist.transpose(1, 0, 2).astype(np.float32), costs)  # (C, X, K)
        best = np.argmin(bits.reshape(C, NUM_CONTEXTS, S * K), axis=-1).T  # (X, C), row-major over (shift, row)
        shift[j], choice[j] = np.divmod(best, K)
    return choice, shift


# --- coding -------------------------------------------------------------------


def _write_uvarint(out: bytearray, v: int):
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise FormatError("entropy payload: malformed escape value")
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def encode_symbols(q: np.ndarray, tables: EntropyTables, j: int) -> bytes:
    """Entropy-code integer latent ``q`` (h, w, C) at knob position ``j``.

    Layout: uvarint escape count, the escapes' magnitudes as uvarints (in
    coding order), then the ANS stream as little-endian uint32 words.
    """
    h, w, C = q.shape
    flat = np.asarray(q).reshape(-1, C)
    escapes, n_esc, runs = bytearray(), 0, []
    done = -1
    for i, positions, channels, cols in _passes(h, w, C):
        if i != done:  # a new pass: its contexts and predicted means
            (ctx, mean), done = predictions(q, i, tables.predictor, tables.mean_predictor), i
        pos, ch, rows, lo, n, mu, bounds = _groups(ctx[:, cols], mean[:, cols], positions, channels, tables, j)
        v = flat[pos, ch].astype(np.int64) - mu
        sym = v - lo + 1
        below, above = sym < 1, sym > n - 2
        for e in np.where(below, lo - 1 - v, v - (lo + n - 2))[below | above]:
            _write_uvarint(escapes, int(e))
        n_esc += int(below.sum() + above.sum())
        sym = np.where(below, 0, np.where(above, n - 1, sym)).astype(np.int32)
        runs += [(sym[s:e], rows[s], ch[s]) for s, e in zip(bounds[:-1], bounds[1:])]
    coder = constriction.stream.stack.AnsCoder()
    for sym, k, c in reversed(runs):  # a stack: the decoder reads the runs in order
        coder.encode_reverse(sym, tables.model(k, c))
    out = bytearray()
    _write_uvarint(out, n_esc)
    return bytes(out + escapes) + coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, shape: tuple, tables: EntropyTables, j: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`; raises FormatError on inconsistent data."""
    h, w, C = shape
    n_esc, pos = _read_uvarint(data, 0)
    if n_esc > h * w * C:
        raise FormatError("entropy payload: more escapes than latent values")
    esc = []
    for _ in range(n_esc):
        v, pos = _read_uvarint(data, pos)
        esc.append(v)
    words = data[pos:]
    if len(words) % 4:
        raise FormatError("entropy payload: ANS stream is not a whole number of words")
    try:
        return _decode_words(words, esc, (h, w, C), tables, j)
    except (ValueError, RuntimeError, OverflowError) as e:  # constriction's verdict on a damaged stream
        raise FormatError(f"entropy payload: {e}") from None


def _decode_words(words, esc, shape, tables, j):
    h, w, C = shape
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    q = np.zeros((h, w, C), dtype=np.int64)
    flat = q.reshape(-1, C)  # a view: decoded values land in q
    esc = np.asarray(esc, dtype=np.int64)
    used = 0
    done = -1
    for i, positions, channels, cols in _passes(h, w, C):
        if i != done:  # a new pass: contexts and predicted means from the passes decoded so far
            (ctx, mean), done = predictions(q, i, tables.predictor, tables.mean_predictor), i
        pos, ch, rows, lo, n, mu, bounds = _groups(ctx[:, cols], mean[:, cols], positions, channels, tables, j)
        runs = [coder.decode(tables.model(rows[s], ch[s]), int(e - s)) for s, e in zip(bounds[:-1], bounds[1:])]
        sym = np.concatenate(runs).astype(np.int64) if runs else np.zeros(0, np.int64)
        vals = sym + lo - 1
        out = np.flatnonzero((sym == 0) | (sym == n - 1))
        if used + len(out) > len(esc):
            raise FormatError("entropy payload: escape values missing")
        e = esc[used : used + len(out)]
        vals[out] = np.where(sym[out] == 0, lo[out] - 1 - e, lo[out] + n[out] - 2 + e)
        used += len(out)
        flat[pos, ch] = vals + mu
    if used != len(esc) or not coder.is_empty():
        raise FormatError("entropy payload: stream does not end where the latent does")
    return q
