"""Plans: a goal becomes ordered steps, each with the tools it may use."""

STAGES = [
    ("understand", ["search"]),
    ("draft", ["editor"]),
    ("review", ["tests", "linter"]),
    ("ship", ["deploy"]),
]


def plan(goal):
    """The steps for `goal`, in order. An empty goal has no plan."""
    goal = " ".join(goal.split())
    if not goal:
        raise ValueError("a goal is needed")
    return [
        {"step": i + 1, "stage": stage, "task": "%s: %s" % (stage, goal), "tools": tools}
        for i, (stage, tools) in enumerate(STAGES)
    ]
