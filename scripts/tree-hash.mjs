// One cache-key rule for what wakestorm builds from its own source (the device engine, the CLI bundle): a sha256 over
// each file's path (relative to the root) and bytes, in path order, cut to 16 hex digits. An edit changes the key.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Every file under root/dir (recursively) whose name keep() accepts, as paths relative to root. */
export function treeFiles(root, dir, keep) {
  const out = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const p = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...treeFiles(root, p, keep));
    else if (keep(e.name)) out.push(p);
  }
  return out;
}

/** The key of these files under root. */
export function treeHash(root, files) {
  const h = createHash('sha256');
  for (const f of [...files].sort())
    h.update(f)
      .update('\0')
      .update(readFileSync(join(root, f)))
      .update('\0');
  return h.digest('hex').slice(0, 16);
}
