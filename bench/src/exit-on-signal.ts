/**
 * Imported (`node --import`) into the floor processes when they are
 * profiled: SIGTERM/SIGINT end them with process.exit, which writes the
 * `--cpu-prof` profile (the default signal death writes none).
 */
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
