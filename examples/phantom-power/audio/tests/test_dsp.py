from audio.dsp import apply_gain, db_to_gain, limit


def test_zero_db_is_unity_gain():
    assert db_to_gain(0) == 1


def test_six_db_roughly_doubles():
    assert abs(apply_gain([0.25], 6.0206)[0] - 0.5) < 1e-4


def test_the_limiter_clips_both_ways():
    assert limit([-2.0, 0.5, 3.0]) == [-1.0, 0.5, 1.0]
