import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from hub.router import fan_out, route  # noqa: E402

RULES = [
    {"when": {"severity": "critical"}, "to": ["pager", "chat"]},
    {"when": {"team": "web"}, "to": ["chat"]},
]


class RouterTest(unittest.TestCase):
    def test_the_first_matching_rule_wins(self):
        self.assertEqual(route(RULES, {"severity": "critical", "team": "web"}), ["pager", "chat"])
        self.assertEqual(route(RULES, {"team": "web"}), ["chat"])

    def test_no_rule_means_the_inbox(self):
        self.assertEqual(route(RULES, {"team": "data"}), ["inbox"])

    def test_fan_out_groups_event_ids_by_channel(self):
        events = [{"id": 1, "team": "web"}, {"id": 2, "severity": "critical"}, {"id": 3}]
        self.assertEqual(fan_out(RULES, events), {"chat": [1, 2], "pager": [2], "inbox": [3]})


if __name__ == "__main__":
    unittest.main()
