#!/usr/bin/env node
// `npm run bench:routes`: set up, then run bench/src/routes.ts (see there for what it measures).
import { setup } from './setup.mjs';

setup();
await import('../bench/dist/src/routes.js');
