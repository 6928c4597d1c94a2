export function cliSourceHash(root?: string): string;
export function buildCliBundle(outdir: string, root?: string): Promise<void>;
export function cliBundle(root?: string): Promise<string | null>;
export function cacheDir(root?: string): string;
export function pruneOld(cache: string, prefix: string, keep: string): void;
