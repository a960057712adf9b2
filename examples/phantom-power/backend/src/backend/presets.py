"""Mixer presets: stored per user, validated before they are saved."""

CHANNELS = 8


def validate(preset):
    """The problems of a preset (a dict of channel number to gain in dB), empty if none."""
    problems = []
    for channel, gain in sorted(preset.items()):
        if not 1 <= channel <= CHANNELS:
            problems.append("channel %d does not exist" % channel)
        elif not -60 <= gain <= 12:
            problems.append("channel %d: gain %s dB is out of range" % (channel, gain))
    return problems


class Store:
    def __init__(self):
        self._presets = {}

    def save(self, user, name, preset):
        problems = validate(preset)
        if problems:
            raise ValueError("; ".join(problems))
        self._presets[(user, name)] = dict(preset)

    def load(self, user, name):
        return self._presets.get((user, name))
