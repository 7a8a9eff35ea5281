/**
 * The published JSON Schemas (gateway/schema/*.schema.json), as the gateway
 * and the CLI validate with them.
 *
 * They are written from their TypeBox sources (schema-source/) by
 * `npm run schema`, and a test fails when a file and its source differ. At
 * run time only the JSON is read: TypeBox stays a build-time tool, so a
 * gateway does not load its 200 modules (≈ 3.5 MiB of RSS at start).
 */
import { readFileSync } from 'node:fs';

/** The schema files, by the name each is published under. */
export type SchemaFileName = 'config.schema.json' | 'route.schema.json' | 'admin.schema.json';

/**
 * A getter of one published schema: read on first call, then shared. Read
 * late, not at import, so `npm run schema` can import the modules whose
 * constants the sources use even when a file is missing or stale.
 * @example const routeSchema = schemaFile<object>('route.schema.json'); ajv.compile(routeSchema());
 */
export function schemaFile<T>(name: SchemaFileName): () => T {
  let parsed: T | undefined;
  return () => {
    if (parsed === undefined) {
      const url = new URL(`../../schema/${name}`, import.meta.url);
      try {
        parsed = JSON.parse(readFileSync(url, 'utf8')) as T;
      } catch (err) {
        throw new Error(`cannot read the schema ${url.pathname} (${(err as Error).message}); run \`npm run schema\``);
      }
    }
    return parsed;
  };
}
