// Meter levels for the mixer UI: decibels to a 0..1 bar height, and the peak of a block.

export const FLOOR_DB = -60;

export function barHeight(db: number): number {
  if (db <= FLOOR_DB) return 0;
  if (db >= 0) return 1;
  return (db - FLOOR_DB) / -FLOOR_DB;
}

export function peakDb(samples: readonly number[]): number {
  const peak = samples.reduce((m, s) => Math.max(m, Math.abs(s)), 0);
  return peak === 0 ? FLOOR_DB : Math.max(FLOOR_DB, 20 * Math.log10(peak));
}
