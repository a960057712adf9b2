from textstats.tokens import sentences, tokens


def test_words_are_lower_cased_in_order():
    assert tokens("The cat saw THE dog.") == ["the", "cat", "saw", "the", "dog"]


def test_apostrophes_stay_inside_words():
    assert tokens("Don't stop; it’s fine") == ["don't", "stop", "it's", "fine"]


def test_digits_and_underscores_are_not_words():
    assert tokens("route_66 has 2 lanes") == ["route", "has", "lanes"]


def test_sentences_split_after_their_mark():
    assert sentences("One. Two! Three? ") == ["One.", "Two!", "Three?"]
    assert sentences("   ") == []
