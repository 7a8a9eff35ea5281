#!/usr/bin/env node
// Writes gateway/schema/*.schema.json from their TypeBox sources
// (gateway/src/schema-source/), and gateway/schema/validators/*.cjs, the
// code Ajv compiles from them. The gateway and the CLI validate with these
// files and never load TypeBox or Ajv's compiler; a test fails when a file
// and its source differ, so run this (after `npm run build`) whenever a
// schema changes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { PUBLISHED_SCHEMAS } from '../gateway/dist/src/schema-source/published.js';
import { COMPILED_VALIDATORS } from '../gateway/dist/src/schema-source/validators.js';

const write = (dir, files, text) => {
  mkdirSync(dir, { recursive: true });
  for (const [name, build] of Object.entries(files)) {
    const target = new URL(name, dir);
    writeFileSync(target, text(build()));
    console.log(`wrote ${target.pathname}`);
  }
};
write(new URL('../gateway/schema/', import.meta.url), PUBLISHED_SCHEMAS, (schema) => JSON.stringify(schema, null, 2) + '\n');
write(new URL('../gateway/schema/validators/', import.meta.url), COMPILED_VALIDATORS, (code) => code);
