"""The FLAN task library: TFDS datasets of FLAN 2021's clusters as templated tasks, and the
collection's mixtures. Importing this package registers them; no data is read until used."""

from . import (  # noqa: F401
    closed_book_qa,
    commonsense,
    coreference,
    mixtures,
    nli,
    paraphrase,
    reading_comprehension,
    sentiment,
    struct_to_text,
    summarization,
    translation,
)
