import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from agent.planner import plan  # noqa: E402


class PlanTest(unittest.TestCase):
    def test_steps_are_ordered_and_name_the_goal(self):
        steps = plan("  write   the docs ")
        self.assertEqual([s["stage"] for s in steps], ["understand", "draft", "review", "ship"])
        self.assertEqual(steps[0]["task"], "understand: write the docs")
        self.assertEqual([s["step"] for s in steps], [1, 2, 3, 4])

    def test_an_empty_goal_is_refused(self):
        with self.assertRaises(ValueError):
            plan("   ")


if __name__ == "__main__":
    unittest.main()
