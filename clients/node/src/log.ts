// The library's logging seam: pass ClientOptions.logger to route its lines
// elsewhere. The default writes warnings and errors to stderr and drops
// info lines unless BUCKETMAP_LOG=info.

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const verbose = process.env.BUCKETMAP_LOG === 'info';

export const defaultLogger: Logger = {
  info: (m) => {
    if (verbose) console.error(m);
  },
  warn: (m) => console.error(m),
  error: (m) => console.error(m),
};

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
