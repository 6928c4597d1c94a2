#!/usr/bin/env node
// Entry point of the `wakestorm` bin: the CLI from its bundle (scripts/cli-bundle.mjs, built on first use and after every
// edit), or the TypeScript through tsx when no bundle can be had or WAKESTORM_CLI_BUNDLE=0 asks for the sources.
import { cliBundle } from '../scripts/cli-bundle.mjs';

const entry = process.env.WAKESTORM_CLI_BUNDLE === '0' ? null : await cliBundle();
if (entry) {
  await import(entry);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../scripts/wakestorm.ts');
}
