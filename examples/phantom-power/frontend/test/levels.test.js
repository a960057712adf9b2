import { test } from "node:test";
import assert from "node:assert/strict";
import { barHeight, peakDb, FLOOR_DB } from "../dist/levels.js";

test("bar heights clamp to the floor and to full scale", () => {
  assert.equal(barHeight(-80), 0);
  assert.equal(barHeight(3), 1);
  assert.equal(barHeight(-30), 0.5);
});

test("the peak of silence is the floor; of a full-scale sample, 0 dB", () => {
  assert.equal(peakDb([0, 0]), FLOOR_DB);
  assert.equal(peakDb([0.25, -1]), 0);
});
