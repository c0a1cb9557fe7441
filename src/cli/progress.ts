/**
 * A progress bar on stderr for long CLI runs (stdout stays clean for tables and --json). On a terminal
 * it redraws one line at most 10 times a second; elsewhere (CI logs, pipes) it prints a plain line at
 * each 10% and whenever the phase changes. Nothing is drawn for runs shorter than `delayMs`, so quick
 * commands print no noise.
 */
export class Progress {
  private readonly tty: boolean;
  private readonly started = Date.now();
  private lastDraw = 0;
  private lastLabel = '';
  private lastDecile = -1;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled = true,
    private readonly delayMs = 400,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(fraction: number, label: string, detail = ''): void {
    if (!this.enabled) return;
    const now = Date.now();
    const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
    if (now - this.started < this.delayMs && f < 1) return;
    const elapsed = (now - this.started) / 1000;
    const eta = f > 0.02 && f < 1 ? ` eta ${fmtS((elapsed * (1 - f)) / f)}` : '';
    if (this.tty) {
      if (now - this.lastDraw < 100 && f < 1 && label === this.lastLabel) return;
      this.lastDraw = now;
      this.lastLabel = label;
      const cols = Math.max(40, this.stream.columns ?? 100);
      const barWidth = 24;
      const full = Math.round(f * barWidth);
      const head = `[${'#'.repeat(full)}${'.'.repeat(barWidth - full)}] ${String(Math.floor(f * 100)).padStart(3)}% ${fmtS(elapsed)}${eta} `;
      const text = `${head}${label}${detail ? ` ${detail}` : ''}`;
      this.stream.write(`\r${text.length > cols - 1 ? text.slice(0, cols - 2) + '…' : text.padEnd(cols - 1)}`);
      this.drawn = true;
      return;
    }
    const decile = Math.floor(f * 10);
    if (label !== this.lastLabel || decile > this.lastDecile) {
      this.lastLabel = label;
      this.lastDecile = decile;
      this.stream.write(`dystro: ${String(Math.floor(f * 100)).padStart(3)}% after ${fmtS(elapsed)}${eta}: ${label}${detail ? ` ${detail}` : ''}\n`);
    }
  }

  /** Clears the bar (terminal) so what follows starts on a clean line. */
  done(): void {
    if (this.tty && this.drawn) this.stream.write(`\r${' '.repeat(Math.max(40, this.stream.columns ?? 100) - 1)}\r`);
    this.drawn = false;
  }
}

function fmtS(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}
