#!/usr/bin/env node
// Writes gateway/schema/*.schema.json from their TypeBox sources
// (gateway/src/schema-source/). The gateway and the CLI validate with these
// files and never load TypeBox; a test fails when a file and its source
// differ, so run this (after `npm run build`) whenever a schema changes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { PUBLISHED_SCHEMAS } from '../gateway/dist/src/schema-source/published.js';

const dir = new URL('../gateway/schema/', import.meta.url);
mkdirSync(dir, { recursive: true });
for (const [name, build] of Object.entries(PUBLISHED_SCHEMAS)) {
  const target = new URL(name, dir);
  writeFileSync(target, JSON.stringify(build(), null, 2) + '\n');
  console.log(`wrote ${target.pathname}`);
}
