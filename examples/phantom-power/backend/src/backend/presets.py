"""Mixer presets: stored per user, validated before they are saved."""

CHANNELS = 8

Preset = dict[int, float]


def validate(preset: Preset) -> list[str]:
    """The problems of a preset (channel number to gain in dB), empty if none."""
    problems = []
    for channel, gain in sorted(preset.items()):
        if not 1 <= channel <= CHANNELS:
            problems.append("channel %d does not exist" % channel)
        elif not -60 <= gain <= 12:
            problems.append("channel %d: gain %s dB is out of range" % (channel, gain))
    return problems


class Store:
    def __init__(self) -> None:
        self._presets: dict[tuple[str, str], Preset] = {}

    def save(self, user: str, name: str, preset: Preset) -> None:
        problems = validate(preset)
        if problems:
            raise ValueError("; ".join(problems))
        self._presets[(user, name)] = dict(preset)

    def load(self, user: str, name: str) -> Preset | None:
        return self._presets.get((user, name))
