// Errors: one class with a gRPC-like code, as the C++ library's
// absl::Status codes, and a message that starts with the field path.

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'FAILED_PRECONDITION'
  | 'NOT_FOUND'
  | 'DATA_LOSS'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'INTERNAL';

export class BucketmapError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'BucketmapError';
    this.code = code;
  }

  /** The same code, with `prefix` before the message. */
  prefixed(prefix: string): BucketmapError {
    return new BucketmapError(this.code, prefix + this.message);
  }
}

export function invalid(message: string): BucketmapError {
  return new BucketmapError('INVALID_ARGUMENT', message);
}

export function failedPrecondition(message: string): BucketmapError {
  return new BucketmapError('FAILED_PRECONDITION', message);
}
