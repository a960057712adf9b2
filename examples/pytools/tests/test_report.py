from textstats.report import report


def test_report_lists_the_top_words():
    assert report("to be or not to be. be!", top=2) == (
        "7 words (4 distinct) in 2 sentences, 3.5 per sentence\n"
        "   3  be\n"
        "   2  to"
    )
