/**
 * Aligned text tables for the CLI; colour only when writing to a terminal.
 */
export interface TableOptions {
  /** Colour the header (and cells via `paint`) — only for a TTY. */
  color: boolean;
}

const ESC = '\x1b[';
export const paint = {
  bold: (s: string, on: boolean) => (on ? `${ESC}1m${s}${ESC}0m` : s),
  red: (s: string, on: boolean) => (on ? `${ESC}31m${s}${ESC}0m` : s),
  green: (s: string, on: boolean) => (on ? `${ESC}32m${s}${ESC}0m` : s),
  yellow: (s: string, on: boolean) => (on ? `${ESC}33m${s}${ESC}0m` : s),
};

// eslint-disable-next-line no-control-regex
const visibleLength = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').length;

/**
 * @example table(['SUBJECT', 'REV'], [['api.legacy', '3']], { color: false })
 */
export function table(headers: string[], rows: string[][], opts: TableOptions): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(widths[i]! - visibleLength(c))))
      .join('  ')
      .trimEnd();
  return [paint.bold(line(headers), opts.color), ...rows.map(line)].join('\n') + '\n';
}
