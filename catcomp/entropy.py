"""Entropy model: a learned factorized density and exact integer coding tables.

Training uses :class:`FactorizedDensity` (Balle et al. 2018, the
"non-parametric" per-channel density) on the *un-gained* latent ``y``. A rate
level with gain ``g`` quantizes ``z = round(y * g)``, so symbol ``q`` covers
``y`` in ``[(q - 1/2) / g, (q + 1/2) / g)``: one density serves every point of
the continuous rate knob.

For coding, :func:`build_tables` evaluates that density once, after training,
into integer frequency tables for every knob position (a grid of
``LEVEL_STEP``). They are saved next to the weights and loaded as integers, so
the encoder and any decoder use bit-identical models whatever the machine or
thread count; no float arithmetic touches the entropy-decoding path. The
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
    """Integer coding tables for every knob position and latent channel.

    Table ``(j, c)`` covers symbols ``q_min[j, c] .. q_min[j, c] + sizes[j, c] - 3``
    plus two escapes (index 0: below the range, last index: above it);
    its frequencies are ``counts[starts[j, c] : starts[j, c] + sizes[j, c]]``.
    """

    q_min: np.ndarray  # (J, C) int32
    sizes: np.ndarray  # (J, C) int32, alphabet size including the 2 escapes
    counts: np.ndarray  # (total,) int32, each table sums to 2**PRECISION

    def __post_init__(self):
        self.starts = np.concatenate([[0], np.cumsum(self.sizes.ravel())[:-1]]).reshape(self.sizes.shape)

    @property
    def num_positions(self) -> int:
        return self.q_min.shape[0]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, q_min=self.q_min, sizes=self.sizes, counts=self.counts)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EntropyTables":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["q_min"].astype(np.int32), z["sizes"].astype(np.int32), z["counts"].astype(np.int32))

    def model(self, j: int, c: int):
        s = self.starts[j, c]
        freq = self.counts[s : s + self.sizes[j, c]].astype(np.float64)
        return constriction.stream.model.Categorical(freq, perfect=False)


def level_index(level: float, num_levels: int) -> int:
    """The knob grid position of a continuous ``level`` (clipped to range)."""
    return int(round(min(max(float(level), 0.0), num_levels - 1.0) / LEVEL_STEP))


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
    """Evaluate ``density`` into integer tables for each row of ``gains`` (J, C).

    Run once after training (CompressAI's ``update()``); the result is saved
    with the model and never recomputed at coding time.
    """
    logit_tail = float(np.log(TAIL / 2 / (1 - TAIL / 2)))
    y_lo, y_hi = _quantiles(density, logit_tail), _quantiles(density, -logit_tail)
    J, C = gains.shape
    q_min = np.floor(y_lo[None] * gains).astype(np.int64)
    q_max = np.ceil(y_hi[None] * gains).astype(np.int64)
    q_max = np.minimum(q_max, q_min + MAX_SYMBOLS - 3)
    sizes = (q_max - q_min + 3).astype(np.int32)
    counts = []
    for j in range(J):
        kmax = int(sizes[j].max()) - 1  # number of bin edges
        # Edges e_0 .. e_{K-2} of the in-range bins, in y units, per channel.
        q = q_min[j][:, None] + np.arange(kmax)[None, :] - 0.5
        edges = (q / gains[j][:, None]).astype("float32")
        logits = ops.convert_to_numpy(density.logits_cdf(edges[:, None, :]))[:, 0, :].astype(np.float64)
        cdf = 1.0 / (1.0 + np.exp(-logits))
        for c in range(C):
            n_edges = sizes[j, c] - 1
            cdf_c = np.concatenate([[0.0], cdf[c, :n_edges], [1.0]])
            cdf_c = np.maximum.accumulate(cdf_c)
            counts.append(_to_counts(np.diff(cdf_c)))
    return EntropyTables(q_min.astype(np.int32), sizes, np.concatenate(counts).astype(np.int32))


# --- coding -----------------------------------------------------------------


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
    """Entropy-code integer latent ``q`` (h, w, C) with the tables at knob ``j``.

    Layout: uvarint escape count, the escapes' magnitudes as uvarints (in
    channel-major scan order), then the ANS stream as little-endian uint32.
    """
    q = np.asarray(q).reshape(-1, q.shape[-1])
    C = q.shape[1]
    coder = constriction.stream.stack.AnsCoder()
    escapes = bytearray()
    n_esc = 0
    per_channel = []
    for c in range(C):
        lo = int(tables.q_min[j, c])
        k = int(tables.sizes[j, c])
        sym = q[:, c] - lo + 1
        below, above = sym < 1, sym > k - 2
        for v in q[below, c]:
            _write_uvarint(escapes, lo - 1 - int(v))
        for v in q[above, c]:
            _write_uvarint(escapes, int(v) - (lo + k - 3) - 1)
        n_esc += int(below.sum() + above.sum())
        sym = np.where(below, 0, np.where(above, k - 1, sym)).astype(np.int32)
        per_channel.append(sym)
    for c in reversed(range(C)):
        coder.encode_reverse(per_channel[c], tables.model(j, c))
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
    n_esc = len(esc)
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    out = np.empty((h * w, C), dtype=np.int64)
    esc_pos = 0
    for c in range(C):
        lo = int(tables.q_min[j, c])
        k = int(tables.sizes[j, c])
        sym = coder.decode(tables.model(j, c), h * w).astype(np.int64)
        vals = sym + lo - 1
        below, above = np.flatnonzero(sym == 0), np.flatnonzero(sym == k - 1)
        nb, na = len(below), len(above)
        if esc_pos + nb + na > n_esc:
            raise FormatError("entropy payload: escape values missing")
        vals[below] = lo - 1 - np.asarray(esc[esc_pos : esc_pos + nb], dtype=np.int64)
        esc_pos += nb
        vals[above] = lo + k - 2 + np.asarray(esc[esc_pos : esc_pos + na], dtype=np.int64)
        esc_pos += na
        out[:, c] = vals
    if esc_pos != n_esc or not coder.is_empty():
        raise FormatError("entropy payload: stream does not end where the latent does")
    return out.reshape(h, w, C)
