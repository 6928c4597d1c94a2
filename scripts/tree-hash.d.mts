export function treeFiles(root: string, dir: string, keep: (name: string) => boolean): string[];
export function treeHash(root: string, files: string[]): string;
