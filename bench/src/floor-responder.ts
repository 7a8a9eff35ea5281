/**
 * A NATS responder with no SDK, for `npm run bench:floor`: answers every
 * request on SUBJECT (queue group natsgw) with one pre-encoded v1 reply
 * envelope (200, text/plain, "hello world"). Under the gateway it isolates
 * the gateway's cost from the SDK's; under floor-nats.ts it is the floor's
 * service. Prints "ready".
 */
import { connect } from '@nats-io/transport-node';
import { DEFAULT_QUEUE, encodeReply } from '@natsgw/service-sdk/protocol';

const nc = await connect({ servers: process.env.NATS_URL! });
const reply = encodeReply({ v: 1, status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('hello world') });
nc.subscribe(process.env.SUBJECT ?? 'api.raw', { queue: DEFAULT_QUEUE, callback: (_err, msg) => void msg.respond(reply) });
await nc.flush();
process.stdout.write('ready\n');
process.once('SIGTERM', () => void nc.drain().then(() => process.exit(0)));
