"""Left-padding decoder-only prompts."""

from __future__ import annotations

import numpy as np
import pytest

from flantune.decoding import DecodeBatchError, left_pad_prompts
from flantune.decoding.prompts import check_left_padded


def test_prompts_are_right_aligned_after_padding():
    batch = left_pad_prompts([[5, 6, 7], [8], [9, 10]], length=4)
    np.testing.assert_array_equal(batch["decoder_input_tokens"],
                                  [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 9, 10]])
    assert batch["decoder_input_tokens"].dtype == np.int32
    check_left_padded(batch["decoder_input_tokens"], pad_id=0)


@pytest.mark.parametrize(("prompts", "kwargs", "message"), [
    ([], {}, "no prompts"),
    ([[1, 2], []], {}, "prompt 1 is empty"),
    ([[1, 2, 3]], {"length": 2}, "more than length=2"),
    ([[4, 0, 5]], {}, "contains pad_id=0"),
])
def test_bad_prompts_are_named(prompts, kwargs, message):
    with pytest.raises(DecodeBatchError, match=message):
        left_pad_prompts(prompts, **kwargs)
