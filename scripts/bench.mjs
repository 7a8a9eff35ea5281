#!/usr/bin/env node
// `npm run bench`: set up, then run bench/src/run.ts (see there for what it measures).
import { setup } from './setup.mjs';

setup();
await import('../bench/dist/src/run.js');
