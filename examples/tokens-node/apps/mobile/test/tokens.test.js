import test from 'node:test';
import assert from 'node:assert';
import { readFileSync } from 'node:fs';

const tokens = JSON.parse(readFileSync('../../packages/design-tokens/dist/mobile/tokens.json', 'utf8'));

test('mobile gets flat tokens with pixel sizes', () => {
  assert.strictEqual(tokens.ColorBrand, '#0055ff');
  assert.match(tokens.SpaceLarge, /^\d+px$/);
});
