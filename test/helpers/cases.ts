/**
 * Counts differential/golden cases per backend and prints the tally when the process exits, so the CI
 * log (and the closing note of an issue) can say how many conformance cases each backend passed.
 */
const counts = new Map<string, number>();
let hooked = false;

export function countCases(backend: string, n: number): void {
  counts.set(backend, (counts.get(backend) ?? 0) + n);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      const parts = [...counts].map(([b, c]) => `${b}=${c}`).join(' ');
      console.log(`  conformance cases: ${parts}`);
    });
  }
}
