// k6 provides console in every VU; @types/k6 leaves it to lib.dom, which would drag browser types into scenarios.
declare const console: {
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};
