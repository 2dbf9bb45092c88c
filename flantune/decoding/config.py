"""What to decode and how (`DecodeConfig`), and what comes back (`Generated`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from flantune.decoding.errors import DecodeConfigError

METHODS = ("greedy", "sample", "beam")
BEAM_SEMANTICS = ("t5x", "hf")
EARLY_STOPPING = (True, False, "never")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Decoding settings.

    `method`: "greedy" (argmax), "sample" (temperature, then top-k, then top-p; temperature 0
    means argmax) or "beam".

    Beam search (`flantune.decoding.beam_search`) follows `beam_semantics`: "t5x" (default),
    t5x's search, where a finished beam of `n` generated tokens (EOS included) scores
    `log p / ((5 + n) / 6) ** length_penalty` (the GNMT alpha), or "hf", transformers' search,
    scoring `log p / n ** length_penalty` (transformers' default is 1.0) and stopping as its
    `early_stopping` says (True, False or "never"; unset means False). `early_stopping` only
    applies to "hf".

    Decoder-only models: `bos_id` is a token put before every prompt at position 0. flantune's
    `DecoderFeatureConverter` trains with `decoder_input_tokens` starting with BOS id 0 (equal to
    the pad id, so it cannot be part of a left-padded prompt): decode flantune-trained decoders
    with `bos_id=0`; None decodes the prompts as given, as Hugging Face does. `prefix_lm`: the
    prompt attends to itself bidirectionally, as in training with SeqIO's PrefixLM features
    (`decoder_causal_attention`, which flantune's converter produces whenever there are inputs);
    False is causal, as Hugging Face decodes. `flantune.evaluation` sets both for decoders.
    """

    max_decode_length: int = 128
    method: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 4
    length_penalty: float = 0.6
    beam_semantics: str = "t5x"
    early_stopping: bool | str | None = None
    eos_id: int = 1
    pad_id: int = 0
    bos_id: int | None = None
    prefix_lm: bool = False

    def __post_init__(self) -> None:
        def fail(field: str, rule: str) -> None:
            raise DecodeConfigError(
                f"DecodeConfig.{field}={getattr(self, field)!r}: {rule}.")

        if self.method not in METHODS:
            fail("method", f"choose one of {METHODS}")
        if self.max_decode_length < 1:
            fail("max_decode_length", "must be >= 1")
        if self.temperature < 0:
            fail("temperature", "must be >= 0 (0 means greedy)")
        if self.top_k < 0:
            fail("top_k", "must be >= 0 (0 turns it off)")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "must be in (0, 1] (1 turns it off)")
        if self.num_beams < 1:
            fail("num_beams", "must be >= 1")
        if self.beam_semantics not in BEAM_SEMANTICS:
            fail("beam_semantics", f"choose one of {BEAM_SEMANTICS}")
        if self.early_stopping is not None:
            if self.beam_semantics != "hf":
                fail("early_stopping", "is Hugging Face's rule; t5x beam search has none (it "
                     "stops once no live beam can beat the worst of num_beams finished ones): "
                     "leave it unset or set beam_semantics='hf'")
            if not any(self.early_stopping is v if isinstance(v, bool)
                       else self.early_stopping == v for v in EARLY_STOPPING):
                fail("early_stopping", f"choose one of {EARLY_STOPPING} (or None: False)")
        if self.eos_id == self.pad_id:
            fail("eos_id", f"must differ from pad_id={self.pad_id}")


@dataclasses.dataclass
class Generated:
    """Decoded tokens [batch, max_decode_length] int32, EOS kept and `pad_id` after it; scores
    [batch] float32: the summed log-probabilities of the tokens up to and including EOS under the
    model (before temperature / top-k / top-p), or for beam search the length-penalised score
    (t5x semantics, a row that finished no beam within max_decode_length: its best beam's
    summed log-probability)."""

    tokens: np.ndarray
    scores: np.ndarray
