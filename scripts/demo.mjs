#!/usr/bin/env node
// `npm run demo`: set up, then run the demo (examples/src/demo.ts).
import { setup } from './setup.mjs';

setup();
await import('../examples/dist/src/demo.js');
