"""Entropy coding: lossless on any integer latent, exact tables, clear failures."""

import dataclasses

import numpy as np
import pytest

from catcomp.entropy import (
    NUM_CONTEXTS,
    PRECISION,
    NUM_BUCKETS,
    EntropyTables,
    SHRINK,
    all_contexts,
    all_predictions,
    context_ids,
    decode_symbols,
    encode_symbols,
    fit_choice,
    fit_predictor,
    means,
    predictions,
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
    """Large latents are coded a block of channels (and contexts a block of positions) at a time; the blocks must not change the bitstream."""
    from catcomp import entropy

    rng = np.random.default_rng(2)
    tables = dataclasses.replace(tables, predictor=rng.integers(0, 2000, size=tables.predictor.shape).astype(np.int16))
    q = rng.integers(-6, 7, size=(9, 11, tables.q_min.shape[1]))
    q[3, 3, -1] = 50_000  # an escape inside the last block
    whole, ctx = encode_symbols(q, tables, 60), all_contexts(q, tables.predictor)
    assert len(np.unique(ctx)) > 10  # the predictor spreads these values over many contexts
    monkeypatch.setattr(entropy, "BLOCK", 7)  # blocks of one channel, contexts a position at a time
    assert np.array_equal(all_contexts(q, tables.predictor), ctx)
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
    assert np.array_equal(again.choice, tables.choice) and np.array_equal(again.predictor, tables.predictor)
    assert np.array_equal(again.shift, tables.shift) and np.array_equal(again.mean_predictor, tables.mean_predictor)



def test_tables_of_an_older_context_model_are_refused_with_the_fix(tables):
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, q_min=tables.q_min, sizes=tables.sizes, counts=tables.counts, choice=tables.choice[:, :136])
    with pytest.raises(ValueError, match="tables-only"):
        EntropyTables.from_bytes(buf.getvalue())
    buf = io.BytesIO()  # format 4: the contexts, but no predicted means
    np.savez_compressed(buf, q_min=tables.q_min, sizes=tables.sizes, counts=tables.counts, choice=tables.choice, predictor=tables.predictor)
    with pytest.raises(ValueError, match="tables-only"):
        EntropyTables.from_bytes(buf.getvalue())


def test_truncated_escape_list_is_an_error(tables):
    with pytest.raises(FormatError):
        decode_symbols(b"\x05\x80", (1, 1, tables.q_min.shape[1]), tables, 0)


def test_contexts_of_a_pass_read_only_values_coded_before_it():
    from catcomp.entropy import _PASSES, _channels, _kinds, _positions

    rng = np.random.default_rng(2)
    h, w, C = 6, 7, 8
    q = rng.integers(-5, 6, size=(h, w, C))
    predictor = rng.integers(-3000, 6000, size=(len(_PASSES), C, C)).astype(np.int16)
    kinds = _kinds(h, w)
    for i, (kind, _, _) in enumerate(_PASSES):
        later = q.copy()
        for k, (kk, _, _) in enumerate(_PASSES[i:], start=i):  # change this pass and every later one
            later[kinds == kk, _channels(k, C).start : _channels(k, C).stop] = rng.integers(-50, 50)
        ctx, mean = predictions(q, i, predictor, predictor[::-1])
        assert ctx.shape == mean.shape == (len(_positions(h, w, i)), len(_channels(i, C)))
        assert np.array_equal(ctx, context_ids(q, i, predictor))
        for got, want in zip(predictions(later, i, predictor, predictor[::-1]), (ctx, mean)):
            assert np.array_equal(got, want)
        # and a decoder that has only the earlier passes (zeros elsewhere) derives the same
        partial = np.zeros_like(q)
        for k, (kk, _, _) in enumerate(_PASSES[:i]):
            partial[kinds == kk, _channels(k, C).start : _channels(k, C).stop] = q[kinds == kk, _channels(k, C).start : _channels(k, C).stop]
        for got, want in zip(predictions(partial, i, predictor, predictor[::-1]), (ctx, mean)):
            assert np.array_equal(got, want)
    ctx = all_contexts(q, predictor).reshape(h, w, C)
    assert (ctx[kinds == 0][:, : C // 4] == 0).all()  # the first pass has nothing to read
    for kind in range(3):  # each kind has its own contexts
        assert ((ctx[kinds == kind] >= kind * NUM_BUCKETS) & (ctx[kinds == kind] < (kind + 1) * NUM_BUCKETS)).all()
    positive = np.full_like(predictor, 1 << 10)
    busy = q.copy()
    busy[kinds < 2] = 40  # large A and B values: every N context moves to the busiest bucket
    assert (all_contexts(busy, positive).reshape(h, w, C)[kinds == 2] == NUM_CONTEXTS - 1).all()
    assert (all_contexts(np.zeros_like(q), positive).reshape(h, w, C)[kinds == 2] == 2 * NUM_BUCKETS).all()


def test_fitted_predictor_and_choice_give_quiet_values_narrow_tables_and_save_bytes(tables):
    """Latents that are flat in one half and busy in the other: the fitted
    predictor must tell the halves apart, the fitted choice code the flat half
    with narrower tables, and such latents must take fewer bytes."""
    rng = np.random.default_rng(3)
    C = tables.q_min.shape[1]
    gains = np.ones((1, C))  # fit for one knob position, latents used as they are
    latents = []
    for _ in range(4):
        y = rng.laplace(0, 3.0, size=(12, 12, C))
        y[:, :6] *= 0.02  # flat left half
        latents.append(y.astype(np.float32))
    predictor = fit_predictor(latents, gains[0])
    assert not predictor[0].any() and predictor[1:].any()  # the first pass reads nothing
    fitted = EntropyTables(tables.q_min, tables.sizes, tables.counts, tables.choice[:1].copy(), predictor)
    fitted.choice, fitted.shift = fit_choice(fitted, gains, latents)
    assert not fitted.shift.any()  # no mean predictor: nothing to subtract
    q = np.rint(latents[0]).astype(np.int64)
    ctx = all_contexts(q, predictor).reshape(12, 12, C)
    rows = fitted.choice[0][ctx, np.arange(C)]
    later = np.arange(C) >= C // 4  # every value but the first pass's has a context
    assert rows[:, :6, later].mean() < rows[:, 6:, later].mean() - 4  # narrower tables where it is flat
    plain = EntropyTables(tables.q_min, tables.sizes, tables.counts, tables.choice[:1].copy(), predictor * 0)
    plain.choice, _ = fit_choice(plain, gains, latents)  # the same fit without contexts
    a, b = encode_symbols(q, plain, 0), encode_symbols(q, fitted, 0)
    assert len(b) < 0.9 * len(a)
    assert np.array_equal(decode_symbols(b, q.shape, fitted, 0), q)


def test_means_round_the_chosen_share_of_the_prediction_exactly():
    unit = 2520 << 12  # a predicted mean of 1
    mean = np.array([0, unit, -unit, 3 * unit // 2, 7 * unit, 2**40 * 3 + 1])
    for s, share in enumerate(SHRINK):
        want = np.floor(mean * (share / 4) / unit + 0.5).astype(np.int64)
        want[-1] = (mean[-1] * share + 2 * unit) // (4 * unit)  # beyond float precision: the exact integer
        assert np.array_equal(means(mean, np.full(mean.shape, s)), want)


def test_fitted_mean_predictor_codes_smooth_signed_latents_in_fewer_bytes(tables):
    """Latents whose values follow their neighbours' signs (smooth signed fields):
    the signed predictor must learn that, the choice must subtract the predicted
    means, and the file must shrink and still decode exactly."""
    rng = np.random.default_rng(4)
    C = tables.q_min.shape[1]
    gains = np.ones((1, C))
    latents = []
    for _ in range(4):
        field = rng.normal(0, 6.0, size=(3, 3, C)).repeat(6, 0).repeat(6, 1)  # constant 6 x 6 patches
        latents.append((field + rng.normal(0, 0.3, size=field.shape)).astype(np.float32))
    contexts = fit_predictor(latents, gains[0])
    plain = EntropyTables(tables.q_min, tables.sizes, tables.counts, tables.choice[:1].copy(), contexts)
    plain.choice, _ = fit_choice(plain, gains, latents)
    mean_predictor = fit_predictor(latents, gains[0], signed=True)
    assert not mean_predictor[0].any() and mean_predictor[1:].any()
    fitted = EntropyTables(tables.q_min, tables.sizes, tables.counts, tables.choice[:1].copy(), contexts, mean_predictor)
    fitted.choice, fitted.shift = fit_choice(fitted, gains, latents)
    assert (fitted.shift > 0).mean() > 0.3
    q = np.rint(latents[0]).astype(np.int64)
    _, mean = all_predictions(q, contexts, mean_predictor)
    assert np.corrcoef(mean[q.reshape(-1, C) != 0], q.reshape(-1, C)[q.reshape(-1, C) != 0])[0, 1] > 0.8
    a, b = encode_symbols(q, plain, 0), encode_symbols(q, fitted, 0)
    assert len(b) < 0.8 * len(a)  # A positions read no neighbour of their own channel: B and N gain
    assert np.array_equal(decode_symbols(b, q.shape, fitted, 0), q)
    try:  # the means are part of the code: tables without them decode something else, or fail
        wrong = decode_symbols(b, q.shape, plain, 0)
    except FormatError:
        wrong = None
    assert wrong is None or not np.array_equal(wrong, q)
