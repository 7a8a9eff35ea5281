/**
 * The `natsgw` command line, every command with its help (yargs). Loaded for
 * anything but a plain `natsgw serve` (serve-args.ts reads that one alone).
 *
 * Options are declared from the configuration schema (config.ts), so --help,
 * the environment variables and the config file can never disagree with what
 * the gateway validates. Exit codes: command.ts.
 */
import yargs, { type Argv } from 'yargs';
import { connectOnce, openBucket } from './connect.js';
import { askFleet, askGateway, render, type FleetResult } from './fleet.js';
import { renderServices } from './services.js';
import { discoverServices } from '../ops/micro-discovery.js';
import { describeEntry, explainPath, type RouteListing, getRoute, listRoutes, putRoute, removeRoute, ROUTE_FLAG_KEYS, routeFromFlags, summarize, type RouteFlags } from './routes.js';
import { paint, table } from './table.js';
import { jsonSafe, printable } from './safe-text.js';
import { envName, flagName, optionKeys, optionMeta } from '../config.js';
import { VERSION } from '../gateway.js';
import { CommandError, configFrom, passedFlags, report, UsageError } from './command.js';
import { serveCommand } from './serve.js';
import type { AdminVerb } from '../ops/admin-data.js';
import { BALANCING_POLICIES, redactRoute } from '../routes/route-schema.js';

/** Options that say how to reach NATS and the routes bucket (shared by every command that talks to NATS). */
const CONNECTION_KEYS = ['nats', 'creds', 'user', 'pass', 'token', 'tlsCa', 'tlsCert', 'tlsKey', 'inboxPrefix', 'routesBucket', 'routesReplicas'] as const;

function declareSchemaOptions(y: Argv, keys: readonly ReturnType<typeof optionKeys>[number][]): Argv {
  for (const key of keys) {
    const meta = optionMeta(key);
    const def = meta.default === undefined ? undefined : Array.isArray(meta.default) ? meta.default.join(',') || '(none)' : String(meta.default);
    y.option(flagName(key), {
      // Everything arrives as text; the schema coerces and checks it.
      type: 'string',
      requiresArg: true,
      describe: `${meta.description}  [env ${envName(key)}]`,
      ...(def !== undefined ? { defaultDescription: def } : {}),
      ...(meta.placeholder ? { nargs: 1 } : {}),
    });
  }
  y.option('config', { type: 'string', requiresArg: true, describe: 'JSON config file with the same keys as these options in camelCase (e.g. {"maxBody": 65536})' });
  return y;
}

function declareServeOptions(y: Argv): Argv {
  return declareSchemaOptions(y, optionKeys()).epilogue(
    'Precedence: flag > environment variable > config file > default.\n' + 'Example: natsgw serve --nats nats://127.0.0.1:4222 --subject api --port 8080',
  );
}

function declareConnection(y: Argv): Argv {
  return declareSchemaOptions(y, CONNECTION_KEYS).option('json', { type: 'boolean', describe: 'Machine-readable output' });
}

function declareRoutePut(y: Argv): Argv {
  return declareConnection(y)
    .positional('subject', { type: 'string', describe: 'Subject under a gateway root, e.g. api.legacy (covers it and everything below)' })
    .option('upstream', { type: 'string', array: true, requiresArg: true, describe: 'Backend URL, optionally =WEIGHT (repeat for several)' })
    .option('nats-raw', {
      type: 'boolean',
      describe: 'Keep SUBJECT on NATS in raw mode: body as the NATS payload, request line and headers as NATS headers (any NATS service answers; takes only --max-body and policy options)',
    })
    .option('balancing', { type: 'string', choices: [...BALANCING_POLICIES], describe: 'Balancing policy (default p2c)' })
    .option('health-path', { type: 'string', requiresArg: true, describe: 'Enable active health checks on this path' })
    .option('health-interval', { type: 'string', requiresArg: true, describe: 'Probe interval, ms (default 5000)' })
    .option('health-timeout', { type: 'string', requiresArg: true, describe: 'Probe timeout, ms (default 2000)' })
    .option('healthy-threshold', { type: 'string', requiresArg: true, describe: 'Good probes to come back (default 2)' })
    .option('unhealthy-threshold', { type: 'string', requiresArg: true, describe: 'Bad probes to go down (default 3)' })
    .option('breaker', { type: 'boolean', describe: 'Enable the circuit breaker with its defaults' })
    .option('breaker-failures', { type: 'string', requiresArg: true, describe: 'Failures that open the breaker (default 5)' })
    .option('breaker-open-ms', { type: 'string', requiresArg: true, describe: 'How long it stays open, ms (default 10000)' })
    .option('timeout', { type: 'string', requiresArg: true, describe: 'Route timeout, ms (default 30000)' })
    .option('connect-timeout', { type: 'string', requiresArg: true, describe: 'Connect timeout, ms (default 5000)' })
    .option('retries', { type: 'string', requiresArg: true, describe: 'Retries on another backend (default 1)' })
    .option('max-body', { type: 'string', requiresArg: true, describe: 'Largest request body, bytes (default 1048576)' })
    .option('strip-prefix', { type: 'boolean', describe: "Remove the subject's path segments before forwarding" })
    .option('add-prefix', { type: 'string', requiresArg: true, describe: 'Path prefix to add before forwarding' })
    .option('preserve-host', { type: 'boolean', describe: "Send the client's Host header" })
    .option('cors', { type: 'string', array: true, requiresArg: true, group: 'Policy:', describe: 'CORS: an allowed origin (https://app.example.com, https://*.example.com, *); repeat for several' })
    .option('cors-methods', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'CORS: methods a preflight may allow, comma-separated (default GET,HEAD,POST)' })
    .option('cors-headers', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'CORS: request headers a preflight may allow, comma-separated' })
    .option('cors-expose', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'CORS: response headers scripts may read, comma-separated' })
    .option('cors-credentials', { type: 'boolean', group: 'Policy:', describe: 'CORS: allow cookies and Authorization' })
    .option('cors-max-age', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'CORS: preflight cache time, seconds (default 600)' })
    .option('rate-limit', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Token bucket rate: RATE/UNIT, e.g. 10/s, 100/minute, 5000/h' })
    .option('burst', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Token bucket size (default: the rate, at least 1)' })
    .option('rate-key', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'What a bucket counts: client (default), route, header:NAME, claim:NAME' })
    .option('rate-fleet', { type: 'boolean', group: 'Policy:', describe: 'Share the limit among the gateways alive, over NATS' })
    .option('jwks-url', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Auth: JWTs verified with the keys at this JWKS URL' })
    .option('jwt-key-file', { type: 'string', array: true, requiresArg: true, group: 'Policy:', describe: 'Auth: JWTs verified with the JWK (or JWKS) in this file; repeat for several' })
    .option('jwt-issuer', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Auth: required iss' })
    .option('jwt-audience', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Auth: required aud' })
    .option('jwt-scope', { type: 'string', array: true, requiresArg: true, group: 'Policy:', describe: 'Auth: a scope the token must hold (else 403); repeat for several' })
    .option('jwt-alg', { type: 'string', array: true, requiresArg: true, group: 'Policy:', describe: 'Auth: an accepted algorithm (RS256, ES256, EdDSA, HS256; default the first three)' })
    .option('api-key', { type: 'string', array: true, requiresArg: true, group: 'Policy:', describe: 'Auth: an API key as ID=KEY; only its SHA-256 is stored; repeat for several' })
    .option('api-key-header', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Auth: the header API keys come in (default x-api-key)' })
    .option('forward-credentials', { type: 'boolean', group: 'Policy:', describe: 'Auth: pass the token or API key itself on to the service (default: only the verified identity)' })
    .option('compress', { type: 'boolean', group: 'Policy:', describe: 'Compress responses (br, gzip) for clients that take it' })
    .option('compress-min', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Smallest body compressed, bytes (default 1024)' })
    .option('methods', { type: 'string', requiresArg: true, group: 'Policy:', describe: 'Limits: allowed methods, comma-separated (others get 405)' })
    .option('file', { type: 'string', requiresArg: true, describe: 'Read the route JSON from a file instead' })
    .epilogue(
      "The value is checked with the gateway's own schema (gateway/schema/route.schema.json) before it is written.\n" +
        'Without --upstream or --nats-raw, the entry is a policy only: the subject stays on NATS, and --timeout and --max-body become its limits.\n' +
        'Example: natsgw routes put api.legacy --upstream http://10.0.0.5:8080=2 --upstream http://10.0.0.6:8080 --health-path /health\n' +
        'Example: natsgw routes put api --cors https://app.example.com --rate-limit 100/s --burst 200 --compress',
    );
}

function declareExplain(y: Argv): Argv {
  return declareSchemaOptions(y, [...CONNECTION_KEYS, 'subject'])
    .positional('path', { type: 'string', describe: 'A request path, e.g. /admin/users/7' })
    .option('json', { type: 'boolean', describe: 'Machine-readable output' })
    .epilogue('Reads the routes bucket and shows what a gateway with root --subject applies to PATH: the target and each policy block, with the key it comes from.');
}

function declareFleet(y: Argv): Argv {
  return declareSchemaOptions(y, [...CONNECTION_KEYS, 'adminToken'])
    .option('gateway', { type: 'string', requiresArg: true, describe: "One gateway's admin API (e.g. http://10.0.0.7:8081) instead of every gateway on NATS" })
    .option('wait', { type: 'string', requiresArg: true, describe: 'How long to wait for answers, ms (default 2000)' })
    .option('json', { type: 'boolean', describe: 'Machine-readable output: [{ gateway, ok, data | error }]' });
}

function declareServices(y: Argv): Argv {
  return declareSchemaOptions(y, CONNECTION_KEYS)
    .option('wait', { type: 'string', requiresArg: true, describe: 'How long to wait for answers, ms (default 2000)' })
    .option('json', { type: 'boolean', describe: 'Machine-readable output: [{ name, versions, instances, endpoints, requests, errors, averageLatencyMs, description, natsgw }]' });
}

function declareSubject(y: Argv): Argv {
  return declareConnection(y).positional('subject', { type: 'string', describe: 'Subject, e.g. api.legacy' });
}

/** A stored value for the terminal: indented JSON, or the text as is; never raw control characters. */
function pretty(raw: string): string {
  try {
    return jsonSafe(JSON.stringify(JSON.parse(raw), null, 2));
  } catch {
    return printable(raw);
  }
}

/** A listing as `ls` and `watch` show it: secrets redacted, no raw value (`get` shows that). */
function shownListing(l: RouteListing): Omit<RouteListing, 'raw'> {
  const { raw: _raw, ...rest } = l;
  return l.route === undefined ? rest : { ...rest, route: redactRoute(l.route) };
}

async function routesCommand(verb: string, argv: Record<string, unknown>): Promise<void> {
  const config = configFrom(argv, verb === 'explain' ? [...CONNECTION_KEYS, 'subject'] : CONNECTION_KEYS);
  const json = argv.json === true;
  const color = process.stdout.isTTY === true && !json;
  const out = (s: string): void => void process.stdout.write(s);
  // Check the input before connecting: a bad route is a usage error, whatever the network does.
  const route = verb === 'put' ? routeFromFlags(passedFlags(argv, ROUTE_FLAG_KEYS) as RouteFlags) : undefined;
  const nc = await connectOnce(config, `natsgw routes ${verb}`);
  try {
    const kv = await openBucket(nc, config.routesBucket, config.routesReplicas);
    const subject = argv.subject as string;
    switch (verb) {
      case 'put': {
        const revision = await putRoute(kv, subject, route!.value);
        const shown = redactRoute(route!.config);
        out(json ? JSON.stringify({ subject, revision, route: shown }) + '\n' : `put ${subject} (revision ${revision}): ${printable(summarize({ valid: true, route: shown }))}\n`);
        return;
      }
      case 'get': {
        // The stored value itself, as a read of the bucket returns it (secrets included).
        const l = await getRoute(kv, subject);
        out(
          json
            ? jsonSafe(JSON.stringify(l)) + '\n'
            : `${subject}  revision ${l.revision}  ${l.valid ? paint.green('valid', color) : paint.red(`INVALID: ${printable(l.reason ?? '')}`, color)}\n${pretty(l.raw)}\n`,
        );
        return;
      }
      case 'ls': {
        const all = (await listRoutes(kv)).map(shownListing);
        if (json) return out(jsonSafe(JSON.stringify(all)) + '\n');
        if (all.length === 0) return out(`no routes in bucket ${config.routesBucket}\n`);
        const rows = all.map((l) => [l.subject, String(l.revision), l.valid ? paint.green('ok', color) : paint.red('invalid', color), printable(summarize(l))]);
        return out(table(['SUBJECT', 'REV', 'STATUS', 'ROUTE'], rows, { color }));
      }
      case 'explain': {
        const e = explainPath(config.rootSubject, argv.path as string, await listRoutes(kv));
        if (json) return out(jsonSafe(JSON.stringify(e)) + '\n');
        const lines = [`${printable(e.path)} → ${printable(e.subject)}`, `  target       ${printable(e.target.summary)}${e.target.key !== undefined ? `  (from ${e.target.key})` : ''}`];
        if (e.policy.length === 0) lines.push('  policy       none');
        for (const p of e.policy) lines.push(`  ${p.block.padEnd(12)} ${printable(p.summary)}  (from ${p.key})`);
        for (const r of e.rejected) lines.push(paint.red(`  ignored      ${r.key}: INVALID: ${printable(r.reason)}`, color));
        return out(lines.join('\n') + '\n');
      }
      case 'rm': {
        await removeRoute(kv, subject);
        out(json ? JSON.stringify({ subject, removed: true }) + '\n' : `removed ${subject}; its paths go to NATS again\n`);
        return;
      }
      case 'watch': {
        const iter = await kv.watch();
        const stop = () => iter.stop();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        process.stderr.write(`watching routes bucket ${config.routesBucket} (Ctrl-C to stop)\n`);
        for await (const e of iter) {
          const time = new Date().toISOString().slice(11, 19);
          if (e.operation !== 'PUT') {
            out(json ? JSON.stringify({ subject: e.key, revision: e.revision, operation: e.operation }) + '\n' : `${time}  ${paint.yellow('DEL', color)}  ${e.key}  rev ${e.revision}\n`);
            continue;
          }
          const l = shownListing(describeEntry(e));
          const line = printable(summarize(l));
          out(
            json
              ? jsonSafe(JSON.stringify({ ...l, operation: 'PUT' })) + '\n'
              : `${time}  ${paint.green('PUT', color)}  ${printable(e.key)}  rev ${e.revision}  ${l.valid ? line : paint.red(line, color)}\n`,
          );
        }
        return;
      }
    }
  } finally {
    await nc.close();
  }
}

async function fleetCommand(verb: AdminVerb, argv: Record<string, unknown>): Promise<void> {
  const config = configFrom(argv, [...CONNECTION_KEYS, 'adminToken']);
  const wait = waitFlag(argv);
  let result: FleetResult;
  if (typeof argv.gateway === 'string') {
    result = await askGateway(argv.gateway, verb, config.admin.token, wait);
  } else {
    const nc = await connectOnce(config, `natsgw ${verb}`);
    try {
      result = await askFleet(nc, verb, config.admin.token, wait);
    } finally {
      await nc.close();
    }
  }
  const { answers, skipped } = result;
  if (argv.json === true) process.stdout.write(jsonSafe(JSON.stringify(answers)) + '\n');
  else process.stdout.write(render(verb, answers, process.stdout.isTTY === true));
  if (skipped.length > 0)
    process.stderr.write(
      `natsgw: skipped ${skipped.length} answer${skipped.length === 1 ? '' : 's'} that ${skipped.length === 1 ? 'is' : 'are'} not a gateway's: ${printable(skipped.join('; ').slice(0, 500))}\n`,
    );
  if (answers.every((a) => !a.ok)) throw new CommandError(`no gateway answered successfully: ${printable(answers[0]!.error ?? 'error')}`, 1);
}

function waitFlag(argv: Record<string, unknown>): number {
  const wait = argv.wait === undefined ? 2000 : Number(argv.wait);
  if (!Number.isInteger(wait) || wait <= 0) throw new UsageError(`--wait must be a whole number of milliseconds (got ${JSON.stringify(argv.wait)})`);
  return wait;
}

async function servicesCommand(argv: Record<string, unknown>): Promise<void> {
  const config = configFrom(argv, CONNECTION_KEYS);
  const wait = waitFlag(argv);
  const nc = await connectOnce(config, 'natsgw services');
  let result: Awaited<ReturnType<typeof discoverServices>>;
  try {
    result = await discoverServices(nc, wait);
  } catch (err) {
    throw new CommandError(`asking for micro services failed: ${(err as Error).message}`, 1);
  } finally {
    await nc.close();
  }
  if (argv.json === true) process.stdout.write(jsonSafe(JSON.stringify(result.services)) + '\n');
  else process.stdout.write(renderServices(result.services, process.stdout.isTTY === true));
  const { skipped } = result;
  if (skipped.length > 0)
    process.stderr.write(
      `natsgw: skipped ${skipped.length} answer${skipped.length === 1 ? '' : 's'} that ${skipped.length === 1 ? 'is' : 'are'} not a micro service's: ${printable(skipped.join('; ').slice(0, 500))}\n`,
    );
}

/** yargs says "Unknown argument: bogus"; name the flag as the user typed it. */
function friendly(msg: string, args: string[]): string {
  const unknown = /^Unknown arguments?: (.+)$/.exec(msg);
  if (unknown) {
    const names = unknown[1]!.split(', ');
    if (names.every((n) => args.includes(n))) return `unknown command ${names.join(' ')}`;
    return `unknown option ${names.map((a) => (a.length > 1 ? '--' : '-') + a).join(', ')}`;
  }
  const missing = /^Not enough arguments following: (.+)$/.exec(msg);
  if (missing) return `--${missing[1]} needs a value`;
  return msg;
}

/** The yargs program for `args`: every command and option, no handler (runProgram dispatches after the parse). */
export function buildParser(args: string[]): Argv {
  return (
    yargs(args)
      .scriptName('natsgw')
      .usage('natsgw <command> [options]\n\nHTTP on the front, NATS request/reply on the back.')
      .command('serve', 'Run the gateway: /a/b is sent to ROOT.a.b over NATS', declareServeOptions)
      .command('status', 'Every gateway on the cluster: root, uptime, request rate, NATS, readiness', declareFleet)
      .command('backends', 'Override backends per gateway, each once with the routes using it: up or why not, last probe, in-flight, ejections', declareFleet)
      .command('circuits', 'Circuit breakers per gateway, one per backend: state, failures, next trial', declareFleet)
      .command('stats', 'Traffic per gateway and route: requests by status class, p50/p90/p99, bytes', declareFleet)
      .command('services', 'Every NATS micro service on the account (natsgw mounts and others): versions, instances, endpoints, requests, errors, average latency', declareServices)
      .command('routes', 'Effective overrides per gateway (no verb), or manage the routes bucket', (y) =>
        declareFleet(y)
          .command('put <subject>', 'Create or replace the override for SUBJECT', declareRoutePut)
          .command('get <subject>', 'Show the override for SUBJECT', declareSubject)
          .command('ls', 'List overrides, with the reason for any a gateway would reject', declareConnection)
          .command('rm <subject>', 'Delete the override for SUBJECT (its paths go back to NATS)', declareSubject)
          .command('explain <path>', 'The target and effective policy of PATH, each block with the key it comes from', declareExplain)
          .command('watch', 'Print changes to overrides as they happen', declareConnection),
      )
      .demandCommand(1, 'Name a command, e.g. natsgw serve')
      .strict()
      .version(VERSION)
      .help()
      .alias('h', 'help')
      .wrap(Math.min(110, process.stdout.columns || 100))
      // Anything yargs rejects is a usage error (exit 2); command failures are raised after parsing.
      .fail((msg, err) => {
        throw new UsageError(friendly(msg ?? err?.message ?? 'invalid usage', args));
      })
  );
}

/**
 * Runs the full CLI with `args` (argv without node and script).
 * @example await runProgram(['routes', 'ls']);
 */
export async function runProgram(args: string[]): Promise<void> {
  const parser = buildParser(args);
  let argv: Record<string, unknown>;
  try {
    argv = (await parser.parseAsync()) as Record<string, unknown>;
    const [command, verb] = argv._ as string[];
    if (command === 'serve') await serveCommand(argv);
    else if (command === 'routes' && verb === undefined) await fleetCommand('routes', argv);
    else if (command === 'routes') await routesCommand(verb!, argv);
    else if (command === 'status' || command === 'backends' || command === 'circuits' || command === 'stats') await fleetCommand(command, argv);
    else if (command === 'services') await servicesCommand(argv);
  } catch (err) {
    report(err);
  }
}
