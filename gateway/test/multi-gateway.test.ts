import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { serve, type Service } from '@natsgw/service-sdk';
import { startNatsServer } from '@natsgw/devkit';
import { startTestGateway } from './helpers.js';

test('gateways: api.staging and api.prod share one NATS server and never cross over', async () => {
  const ns = await startNatsServer();
  const staging = await startTestGateway({ nats: ns.url, subject: 'api.staging' });
  const prod = await startTestGateway({ nats: ns.url, subject: 'api.prod' });
  const calls: string[] = [];
  const services: Service[] = [];
  try {
    await Promise.all([staging.gw.connected, prod.gw.connected]);
    for (const env of ['staging', 'prod']) {
      services.push(
        await serve(
          (req, res) => {
            calls.push(`${env} ${req.method} ${req.url}`);
            res.end(`${env}:${req.url}`);
          },
          { nats: ns.url, subject: `api.${env}.orders` },
        ),
      );
    }
    // Only staging has a "beta" service.
    services.push(await serve((_req, res) => res.end('beta'), { nats: ns.url, subject: 'api.staging.beta' }));

    for (let i = 0; i < 20; i++) {
      const [a, b] = await Promise.all([request(`${staging.base}/orders/${i}`), request(`${prod.base}/orders/${i}`, { method: 'POST', body: 'x' })]);
      assert.equal(await a.body.text(), `staging:/orders/${i}`);
      assert.equal(await b.body.text(), `prod:/orders/${i}`);
    }
    assert.equal(calls.filter((c) => c.startsWith('staging')).length, 20);
    assert.equal(calls.filter((c) => c.startsWith('prod')).length, 20);
    assert.ok(
      calls.every((c) => (c.startsWith('staging') ? c.includes(' GET ') : c.includes(' POST '))),
      'each request went to its own environment',
    );

    const beta = await request(`${prod.base}/beta`);
    assert.equal(beta.statusCode, 503, 'prod cannot reach a staging-only service');
    assert.equal(((await beta.body.json()) as { subject: string }).subject, 'api.prod.beta');
    // Nor can a path climb out of its root.
    const climb = await request(`${prod.base}/..%2Fstaging/orders/1`);
    assert.notEqual(await climb.body.text(), 'staging:/orders/1');
  } finally {
    for (const s of services) await s.drain();
    await staging.gw.close(500);
    await prod.gw.close(500);
    await ns.dispose();
  }
});
