"""A Hugging Face fast tokenizer for a flantune SentencePiece vocabulary, written beside an
exported checkpoint so `AutoTokenizer.from_pretrained(dir)` encodes exactly as flantune does.

The tokenizer follows the SentencePiece model's own settings (transformers'
`SpmConverter.build_tokenizer_from_spm_proto`). SentencePiece never normalizes user-defined
pieces (the demo vocabulary's "\\n", which its NFKC rules would turn into a space), so those are
swapped for private-use characters around the normalizer. Special-token strings in text are
tokenized as text, as SentencePiece does. Every export is loaded back and checked against
SentencePiece on probe texts; a tokenizer that encodes or decodes differently is not written.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from flantune.models.convert.errors import CheckpointError

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Files `PreTrainedTokenizerFast.save_pretrained` writes.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_SENTINEL_BASE = 0x100000  # Supplementary Private Use Area-B
_NORMAL, _USER_DEFINED = 1, 4
PROBE_TEXTS = (
    "Hello world", "Question: What is 7 * 8?\nAnswer:", "  two  spaces and  trailing  ",
    "\nleading newline", "trailing newline\n", "a\n b \n\n  c\n\n\nd", "tab\tseparated\tvalues",
    "\r\nwindows line", "ünïcödé ½ ﬁ Ａｂｃ １２３ 😀 中文 ﬀ", "x=3*4; y = (2/5)? [ok] {a: 1}",
    "the </s> and <pad> and <unk> strings", "<0x41> <0x0A>", " leading space", "",
    "fill <extra_id_0> and <extra_id_1>s",
    "Q: 12, 18\nA: 36\n\nQ: 5, 19\nA:",
)


def _model_proto(path: str, extra_ids: int):
    """The SentencePiece model flantune encodes with: the file's, plus seqio's `extra_ids`
    sentinel pieces '▁<extra_id_N>' (user-defined, <extra_id_0> last)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    model_pb2 = import_protobuf()
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as err:  # OSError, protobuf's DecodeError
        raise CheckpointError(f"vocabulary {path}: not a SentencePiece model ({err}); pass the "
                              ".model file the model was trained with") from err
    for i in reversed(range(extra_ids)):  # as seqio.SentencePieceVocabulary adds them
        proto.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0,
                         type=model_pb2.ModelProto.SentencePiece.USER_DEFINED)
    return proto


def _sentencepiece(proto) -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto.SerializeToString())
    return processor


def _protect_user_defined(tokenizer, proto) -> None:
    """Swaps user-defined pieces that the precompiled normalizer would change for private-use
    characters before it and back after it (SentencePiece does not normalize them)."""
    from tokenizers import normalizers

    charsmap = proto.normalizer_spec.precompiled_charsmap
    if not charsmap:
        return
    precompiled = normalizers.Precompiled(charsmap)
    pieces = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    changed = [piece for piece in pieces if precompiled.normalize_str(piece) != piece]
    if not changed:
        return
    before, after = [], []
    for index, piece in enumerate(changed):
        sentinel = chr(_SENTINEL_BASE + index)
        if precompiled.normalize_str(sentinel) != sentinel:
            raise CheckpointError(f"the vocabulary's normalizer changes U+{ord(sentinel):X}, so "
                                  f"its user-defined piece {piece!r} cannot be protected")
        before.append(normalizers.Replace(piece, sentinel))
        after.append(normalizers.Replace(sentinel, piece))
    tokenizer.normalizer = normalizers.Sequence([*before, tokenizer.normalizer, *after])


def _never_whole(tokenizer, proto) -> None:
    """SentencePiece segments text into normal and user-defined pieces only, so the text of a
    control, unknown, unused or byte piece ('</s>', '<0x41>') is never that piece. A pre-token
    boundary after its first character keeps the converted tokenizer from matching it whole."""
    from tokenizers import Regex, pre_tokenizers

    others = sorted({p.piece for p in proto.pieces
                     if p.type not in (_NORMAL, _USER_DEFINED) and len(p.piece) > 1})
    if not others:
        return
    by_first: dict[str, list[str]] = {}
    for piece in others:
        by_first.setdefault(piece[0], []).append(re.escape(piece[1:]))
    pattern = "|".join(f"{re.escape(first)}(?=(?:{'|'.join(rests)}))"
                       for first, rests in sorted(by_first.items()))
    split = pre_tokenizers.Split(Regex(pattern), behavior="merged_with_previous")
    tokenizer.pre_tokenizer = (split if tokenizer.pre_tokenizer is None else
                               pre_tokenizers.Sequence([tokenizer.pre_tokenizer, split]))


def build_tokenizer(vocabulary_path: str, *, extra_ids: int = 0, add_bos: bool = False,
                    add_eos: bool = True):
    """A `PreTrainedTokenizerFast` for the SentencePiece model at `vocabulary_path` (pad 0,
    eos 1, unk 2), with `extra_ids` T5 sentinels as seqio adds them. Encoding adds
    `<pad>` (flantune's decoder start, id 0) in front with `add_bos` and `</s>` after the text
    with `add_eos`, as flantune's features do."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = _model_proto(vocabulary_path, extra_ids)
    sentencepiece = _sentencepiece(proto)
    if proto.trainer_spec.model_type != 1:
        raise CheckpointError(f"vocabulary {vocabulary_path}: only unigram SentencePiece models "
                              "convert faithfully (this one is not unigram)")
    names = {sentencepiece.pad_id(): PAD, sentencepiece.eos_id(): EOS,
             sentencepiece.unk_id(): UNK}
    if names != {0: PAD, 1: EOS, 2: UNK} or any(
            sentencepiece.id_to_piece(i) != piece for i, piece in names.items()):
        raise CheckpointError(
            f"vocabulary {vocabulary_path}: flantune needs pad 0 '{PAD}', eos 1 '{EOS}' and unk "
            f"2 '{UNK}', found pad {sentencepiece.pad_id()}, eos {sentencepiece.eos_id()}, unk "
            f"{sentencepiece.unk_id()}")
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(
        proto, [(p.piece, p.score) for p in proto.pieces])
    _protect_user_defined(tokenizer, proto)
    _never_whole(tokenizer, proto)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in (PAD, EOS, UNK)])
    single = ([f"{PAD}:0"] if add_bos else []) + ["$A:0"] + ([f"{EOS}:0"] if add_eos else [])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(PAD, 0), (EOS, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        bos_token=PAD if add_bos else None, split_special_tokens=True,
        padding_side="left" if add_bos else "right",
        clean_up_tokenization_spaces=False, model_max_length=int(1e30))


def expected_ids(sentencepiece: spm.SentencePieceProcessor, text: str, *, add_bos: bool,
                 add_eos: bool) -> list[int]:
    """The ids flantune's features hold for `text`."""
    return [0] * add_bos + list(sentencepiece.encode(text)) + [1] * add_eos


def check_tokenizer(directory: str | Path, vocabulary_path: str, texts: Iterable[str], *,
                    extra_ids: int = 0, add_bos: bool, add_eos: bool) -> int:
    """Loads `directory` with `AutoTokenizer` and raises CheckpointError naming the first text
    it encodes (or decodes) differently from SentencePiece; returns the number checked."""
    from transformers import AutoTokenizer

    sentencepiece = _sentencepiece(_model_proto(vocabulary_path, extra_ids))
    loaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    count = 0
    for text in texts:
        want = expected_ids(sentencepiece, text, add_bos=add_bos, add_eos=add_eos)
        got = loaded(text)["input_ids"]
        if got != want:
            raise CheckpointError(
                f"the Hugging Face tokenizer for {vocabulary_path} encodes {text[:200]!r} as "
                f"{got[:40]}, but flantune (SentencePiece) as {want[:40]}; no tokenizer was "
                "written (export with --no-tokenizer and tokenize with SentencePiece)")
        pieces = list(sentencepiece.encode(text))
        if loaded.decode(pieces) != sentencepiece.decode(pieces):
            raise CheckpointError(
                f"the Hugging Face tokenizer for {vocabulary_path} decodes the ids of "
                f"{text[:200]!r} as {loaded.decode(pieces)!r}, but SentencePiece as "
                f"{sentencepiece.decode(pieces)!r}; no tokenizer was written")
        count += 1
    return count


def save_tokenizer(vocabulary_path: str, directory: str | Path, *, extra_ids: int = 0,
                   add_bos: bool = False, add_eos: bool = True, vocab_size: int | None = None,
                   texts: Sequence[str] = ()) -> list[Path]:
    """Writes the tokenizer files into `directory` after checking, in a scratch directory, that
    they load and encode `PROBE_TEXTS` and `texts` as SentencePiece does; returns the files.
    With `vocab_size` (the model's), a vocabulary with more ids than that is refused."""
    tokenizer = build_tokenizer(vocabulary_path, extra_ids=extra_ids, add_bos=add_bos,
                                add_eos=add_eos)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise CheckpointError(
            f"vocabulary {vocabulary_path} has {len(tokenizer)} ids (with {extra_ids} extra "
            f"ids), more than the model's vocab_size {vocab_size}: it is not the vocabulary the "
            "model was trained with; pass the right one with --vocabulary")
    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="flantune-tokenizer-") as scratch:
        tokenizer.save_pretrained(scratch)
        check_tokenizer(scratch, vocabulary_path, [*PROBE_TEXTS, *texts], extra_ids=extra_ids,
                        add_bos=add_bos, add_eos=add_eos)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for file in sorted(Path(scratch).iterdir()):
            shutil.copyfile(file, directory / file.name)
            written.append(directory / file.name)
    return written


__all__ = ["PROBE_TEXTS", "build_tokenizer", "check_tokenizer", "save_tokenizer"]
