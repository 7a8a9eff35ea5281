/** Contender (c), the service side: the same handler mounted on NATS with the SDK. */
import { serve } from '@natsgw/service-sdk';
import { hello } from './handler.js';
import { large } from './large-handler.js';

const service = await serve(hello, { nats: process.env.NATS_URL!, subject: process.env.SUBJECT ?? 'api.hello' });
// The large-body contender's handler, streamed (protocol v2).
const big = await serve(large, { nats: process.env.NATS_URL!, subject: 'api.big' });
process.stdout.write('ready\n');
process.once('SIGTERM', () => void Promise.all([service.drain(), big.drain()]).then(() => process.exit(0)));
