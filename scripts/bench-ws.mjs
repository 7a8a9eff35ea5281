#!/usr/bin/env node
// `npm run bench:ws`: set up, then run bench/src/ws.ts (see there for what it measures).
import { setup } from './setup.mjs';

setup();
await import('../bench/dist/src/ws.js');
