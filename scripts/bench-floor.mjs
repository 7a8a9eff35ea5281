#!/usr/bin/env node
// `npm run bench:floor`: set up, then run bench/src/floor.ts (see there for what it measures).
import { setup } from './setup.mjs';

setup();
await import('../bench/dist/src/floor.js');
