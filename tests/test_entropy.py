"""Entropy coding: lossless on any integer latent, exact tables, clear failures."""

import numpy as np
import pytest

from catcomp.entropy import PRECISION, EntropyTables, decode_symbols, encode_symbols
from catcomp.errors import FormatError
from catcomp.zoo import load_model


@pytest.fixture
def tables():
    return load_model("general").tables


def test_every_table_sums_to_the_precision_and_has_no_zero(tables):
    for j in (0, tables.num_positions // 2, tables.num_positions - 1):
        for c in range(tables.q_min.shape[1]):
            s = tables.starts[j, c]
            freq = tables.counts[s : s + tables.sizes[j, c]]
            assert freq.sum() == 1 << PRECISION and freq.min() >= 1


def test_round_trip_including_escapes_far_outside_the_tables(tables):
    rng = np.random.default_rng(0)
    j = 40
    q = rng.integers(-3, 4, size=(5, 7, tables.q_min.shape[1]))
    q[0, 0, 0], q[1, 2, 3], q[4, 6, 5] = 10_000, -123_456, 77  # forced escapes
    data = encode_symbols(q, tables, j)
    assert np.array_equal(decode_symbols(data, q.shape, tables, j), q)


def test_decoding_with_wrong_shape_or_tables_position_fails_or_differs(tables):
    q = np.random.default_rng(1).integers(-2, 3, size=(4, 4, tables.q_min.shape[1]))
    data = encode_symbols(q, tables, 10)
    with pytest.raises(FormatError):
        decode_symbols(data, (4, 5, q.shape[2]), tables, 10)


def test_tables_survive_serialisation(tables):
    again = EntropyTables.from_bytes(tables.to_bytes())
    assert np.array_equal(again.counts, tables.counts) and np.array_equal(again.q_min, tables.q_min)


def test_truncated_escape_list_is_an_error(tables):
    with pytest.raises(FormatError):
        decode_symbols(b"\x05\x80", (1, 1, tables.q_min.shape[1]), tables, 0)
