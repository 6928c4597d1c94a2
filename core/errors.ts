// One base for every error a user can cause: its message is the one line the CLI prints, its exit code what it exits
// with (2: bad input, nothing started; 1: could not start or run). Runtime-free: k6 and Node throw the same classes.
export class WakestormError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}
