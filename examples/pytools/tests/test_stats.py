from textstats.stats import frequencies, summary


def test_most_frequent_first_ties_alphabetical():
    assert frequencies("b a b c a b") == [("b", 3), ("a", 2), ("c", 1)]


def test_summary_counts_words_and_sentences():
    assert summary("A cat. A dog sat.") == {
        "words": 5,
        "distinct": 4,
        "sentences": 2,
        "words_per_sentence": 2.5,
    }


def test_empty_text_has_no_sentences():
    assert summary("")["words_per_sentence"] == 0.0
