"""Which channels a notification goes to: the first matching rule wins."""


def matches(rule, event):
    for key, want in rule.get("when", {}).items():
        if event.get(key) != want:
            return False
    return True


def route(rules, event):
    """The channels for `event` under `rules`, or the default channel."""
    for rule in rules:
        if matches(rule, event):
            return list(rule["to"])
    return ["inbox"]


def fan_out(rules, events):
    """Channel → the ids of the events routed to it."""
    out = {}
    for event in events:
        for channel in route(rules, event):
            out.setdefault(channel, []).append(event["id"])
    return out
