"""Signal processing for the audio service: gain and a hard limiter on float samples."""


def db_to_gain(db):
    return 10 ** (db / 20)


def apply_gain(samples, db):
    gain = db_to_gain(db)
    return [s * gain for s in samples]


def limit(samples, ceiling=1.0):
    """Clips every sample to [-ceiling, ceiling]."""
    return [max(-ceiling, min(ceiling, s)) for s in samples]
