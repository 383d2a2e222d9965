"""Entropy coding: lossless on any integer latent, exact tables, clear failures."""

import numpy as np
import pytest

from catcomp.entropy import (
    NUM_CONTEXTS,
    PRECISION,
    EntropyTables,
    all_contexts,
    context_ids,
    decode_symbols,
    encode_symbols,
    fit_choice,
)
from catcomp.errors import FormatError
from catcomp.zoo import load_model


@pytest.fixture
def tables():
    return load_model("general").tables


def test_every_table_sums_to_the_precision_and_has_no_zero(tables):
    for k in range(len(tables.q_min)):
        for c in range(tables.q_min.shape[1]):
            s = tables.starts[k, c]
            freq = tables.counts[s : s + tables.sizes[k, c]]
            assert freq.sum() == 1 << PRECISION and freq.min() >= 1
    assert tables.choice.shape[1] == NUM_CONTEXTS and tables.choice.max() < len(tables.q_min)


def test_round_trip_including_escapes_far_outside_the_tables(tables):
    rng = np.random.default_rng(0)
    j = 40
    q = rng.integers(-3, 4, size=(5, 7, tables.q_min.shape[1]))
    q[0, 0, 0], q[1, 2, 3], q[4, 6, 5] = 10_000, -123_456, 77  # forced escapes
    data = encode_symbols(q, tables, j)
    assert np.array_equal(decode_symbols(data, q.shape, tables, j), q)


def test_coding_in_small_channel_blocks_writes_the_same_bytes(tables, monkeypatch):
    """Large latents are coded a block of channels (and contexts a band of rows) at a time; the blocks must not change the bitstream."""
    from catcomp import entropy

    rng = np.random.default_rng(2)
    q = rng.integers(-6, 7, size=(9, 11, tables.q_min.shape[1]))
    q[3, 3, -1] = 50_000  # an escape inside the last block
    whole, ctx = encode_symbols(q, tables, 60), all_contexts(q)
    monkeypatch.setattr(entropy, "BLOCK", 7)  # blocks of one channel, contexts a row at a time
    assert np.array_equal(all_contexts(q), ctx)
    assert len(entropy._passes(9, 11, q.shape[2])) == 3 * q.shape[2]  # each channel once per position kind
    assert encode_symbols(q, tables, 60) == whole
    assert np.array_equal(decode_symbols(whole, q.shape, tables, 60), q)


def test_decoding_with_wrong_shape_or_tables_position_fails_or_differs(tables):
    q = np.random.default_rng(1).integers(-2, 3, size=(4, 4, tables.q_min.shape[1]))
    data = encode_symbols(q, tables, 10)
    with pytest.raises(FormatError):
        decode_symbols(data, (4, 5, q.shape[2]), tables, 10)


def test_tables_survive_serialisation(tables):
    again = EntropyTables.from_bytes(tables.to_bytes())
    assert np.array_equal(again.counts, tables.counts) and np.array_equal(again.q_min, tables.q_min)
    assert np.array_equal(again.choice, tables.choice)


def test_truncated_escape_list_is_an_error(tables):
    with pytest.raises(FormatError):
        decode_symbols(b"\x05\x80", (1, 1, tables.q_min.shape[1]), tables, 0)


def test_contexts_of_a_pass_read_only_values_coded_before_it():
    from catcomp.entropy import _PASSES, _channels, _kinds

    rng = np.random.default_rng(2)
    h, w, C = 6, 7, 8
    q = rng.integers(-5, 6, size=(h, w, C))
    kinds = _kinds(h, w)
    for i, (kind, _, _) in enumerate(_PASSES):
        later = q.copy()
        for k, (kk, _, _) in enumerate(_PASSES[i:], start=i):  # change this pass and every later one
            later[kinds == kk, _channels(k, C).start : _channels(k, C).stop] = rng.integers(-50, 50)
        cs = slice(_channels(i, C).start, _channels(i, C).stop)
        assert np.array_equal(context_ids(later, i)[:, cs], context_ids(q, i)[:, cs])
        # and a decoder that has only the earlier passes (zeros elsewhere) derives the same
        partial = np.zeros_like(q)
        for k, (kk, _, _) in enumerate(_PASSES[:i]):
            partial[kinds == kk, _channels(k, C).start : _channels(k, C).stop] = q[kinds == kk, _channels(k, C).start : _channels(k, C).stop]
        assert np.array_equal(context_ids(partial, i)[:, cs], context_ids(q, i)[:, cs])
    ctx = all_contexts(q).reshape(h, w, C)
    assert (ctx[kinds == 0][:, : C // 4] == 0).all()  # the first pass has nothing to read
    assert (ctx[kinds == 0] < 8).all() and ((ctx[kinds == 1] >= 8) & (ctx[kinds == 1] < 72)).all() and (ctx[kinds == 2] >= 72).all()
    busy = q.copy()
    busy[kinds < 2] = 40  # large A and B values: every N context moves to the busiest bucket
    assert (all_contexts(busy).reshape(h, w, C)[kinds == 2] == NUM_CONTEXTS - 1).all()
    quiet = np.zeros_like(q)
    assert (all_contexts(quiet).reshape(h, w, C)[kinds == 2] == 72).all()


def test_fitted_choice_gives_quiet_contexts_narrow_tables_and_saves_bytes(tables):
    """Latents that are flat in one half and busy in the other: fitting must pick a
    narrower table for the flat neighbourhoods and code such latents in fewer bytes."""
    rng = np.random.default_rng(3)
    C = tables.q_min.shape[1]
    gains = np.ones((1, C))  # fit for one knob position, latents used as they are
    latents = []
    for _ in range(4):
        y = rng.laplace(0, 3.0, size=(12, 12, C))
        y[:, :6] *= 0.02  # flat left half
        latents.append(y.astype(np.float32))
    choice = fit_choice(tables, gains, latents)
    quiet, busy = choice[0, 72], choice[0, NUM_CONTEXTS - 1]  # N positions: zero neighbours vs the busiest ones
    assert (quiet <= busy).all() and (quiet < busy).mean() > 0.5
    fitted = EntropyTables(tables.q_min, tables.sizes, tables.counts, np.repeat(choice[:1], tables.num_positions, 0))
    q = np.rint(latents[0]).astype(np.int64)
    a, b = encode_symbols(q, tables, 0), encode_symbols(q, fitted, 0)
    assert len(b) < len(a)
    assert np.array_equal(decode_symbols(b, q.shape, fitted, 0), q)
