"""Sentiment: SST-2 (GLUE), IMDB reviews, Yelp polarity reviews.

All three are in TFDS. IMDB and Yelp polarity have no validation split, so their ``test``
split is the evaluation split (``validation`` here); SST-2's GLUE test split is unlabeled, so
its ``validation`` split is used. Scored by accuracy over the options.
"""

from __future__ import annotations

from flantune.data import Template
from flantune.metrics import accuracy, option_answer

from .common import SENTIMENT, TfdsDataset, classification, register

TEMPLATES = (
    Template("{text}\n\nIs the sentiment of this review positive or negative?\n{options_}",
             "{answer}", name="sentiment_review"),
    Template("What is the sentiment of the following text?\n\n{text}\n\n{options_}",
             "{answer}", name="sentiment_what"),
    Template("Text: {text}\n\nDid the writer like it? {options_}", "{answer}",
             name="sentiment_liked"),
    Template("{text}\n\nHow would you describe the tone of the text above?\n{options_}",
             "{answer}", name="sentiment_tone"),
    Template("Read the review and say whether it is favourable.\n\n{text}\n{options_}",
             "{answer}", name="sentiment_favourable"),
    Template("Classify the opinion expressed here as positive or negative.\n{text}\n"
             "{options_}", "{answer}", name="sentiment_classify"),
    Template("{text}\nWas this opinion meant to be positive or negative? {options_}",
             "{answer}", name="sentiment_meant"),
)
POLARITY = ("negative", "positive")
TEST_AS_VALIDATION = {"train": "train", "validation": "test"}


def sentiment(name: str, dataset: TfdsDataset, rename=None):
    return register(name, dataset, templates=TEMPLATES, cluster=SENTIMENT,
                    record_fn=classification(dataset, POLARITY, rename), has_options=True,
                    postprocess_fn=option_answer, metric_fns=(accuracy,))


sentiment("sst2", TfdsDataset("glue/sst2:2.0.0", label_names=("negative", "positive")),
          rename={"text": "sentence"})
sentiment("imdb_reviews", TfdsDataset("imdb_reviews/plain_text:1.0.0", TEST_AS_VALIDATION,
                                      label_names=("neg", "pos")))
sentiment("yelp_polarity_reviews", TfdsDataset("yelp_polarity_reviews:0.2.0",
                                               TEST_AS_VALIDATION, label_names=("1", "2")))
