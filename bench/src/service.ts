/** Contender (c), the service side: the same handler mounted on NATS with the SDK. */
import { serve } from '@natsgw/service-sdk';
import { hello } from './handler.js';

const service = await serve(hello, { nats: process.env.NATS_URL!, subject: process.env.SUBJECT ?? 'api.hello' });
process.stdout.write('ready\n');
process.once('SIGTERM', () => void service.drain().then(() => process.exit(0)));
