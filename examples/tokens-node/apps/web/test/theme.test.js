import test from 'node:test';
import assert from 'node:assert';
import { button } from '../src/theme.js';

test('the button uses the brand colour and the medium space', () => {
  assert.strictEqual(button(), 'background:#0055ff;color:#ffffff;padding:8px');
});
