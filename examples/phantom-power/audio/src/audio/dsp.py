"""Signal processing for the audio service: gain and a hard limiter on float samples."""


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def apply_gain(samples: list[float], db: float) -> list[float]:
    gain = db_to_gain(db)
    return [s * gain for s in samples]


def limit(samples: list[float], ceiling: float = 1.0) -> list[float]:
    """Clips every sample to [-ceiling, ceiling]."""
    return [max(-ceiling, min(ceiling, s)) for s in samples]
