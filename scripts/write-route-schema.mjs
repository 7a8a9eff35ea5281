#!/usr/bin/env node
// Writes gateway/schema/route.schema.json from the schema the gateway and the
// CLI use (gateway/src/routes/route-schema.ts). A test fails when the two
// differ, so run this (after `npm run build`) whenever the schema changes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { routeJsonSchema } from '../gateway/dist/src/routes/route-schema.js';

const target = new URL('../gateway/schema/route.schema.json', import.meta.url);
mkdirSync(new URL('.', target), { recursive: true });
writeFileSync(target, JSON.stringify(routeJsonSchema(), null, 2) + '\n');
console.log(`wrote ${target.pathname}`);
