import pytest

from backend.presets import Store, validate


def test_a_valid_preset_has_no_problems():
    assert validate({1: 0, 8: -12}) == []


def test_out_of_range_channels_and_gains_are_named():
    assert validate({9: 0, 2: 20}) == [
        "channel 2: gain 20 dB is out of range",
        "channel 9 does not exist",
    ]


def test_the_store_keeps_valid_presets_and_refuses_others():
    store = Store()
    store.save("ana", "live", {1: -3})
    assert store.load("ana", "live") == {1: -3}
    assert store.load("ana", "studio") is None
    with pytest.raises(ValueError, match="channel 0 does not exist"):
        store.save("ana", "bad", {0: 0})
