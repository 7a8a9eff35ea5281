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
import { createRequire } from 'node:module';
import type { ValidateFunction } from 'ajv';

/** The schema files, by the name each is published under. */
export type SchemaFileName = 'config.schema.json' | 'route.schema.json' | 'admin.schema.json';
/** The compiled validators of those schemas (gateway/schema/validators/), one file per schema. */
export type ValidatorFileName = 'config.cjs' | 'route.cjs' | 'admin.cjs';

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

const requireHere = createRequire(import.meta.url);

/**
 * A getter of one schema's compiled validators (gateway/schema/validators/,
 * written with the schema files by `npm run schema`; see
 * schema-source/validators.ts): loaded on first call, then shared. Ajv's
 * compiler is never loaded for them.
 * @example const validators = schemaValidators<'route' | 'policy'>('route.cjs'); validators().route(value);
 */
export function schemaValidators<Name extends string>(name: ValidatorFileName): () => Record<Name, ValidateFunction> {
  let loaded: Record<Name, ValidateFunction> | undefined;
  return () => {
    if (loaded === undefined) {
      const path = `../../schema/validators/${name}`;
      try {
        loaded = requireHere(path) as Record<Name, ValidateFunction>;
      } catch (err) {
        throw new Error(`cannot load the schema validators gateway/schema/validators/${name} (${(err as Error).message}); run \`npm run schema\``);
      }
    }
    return loaded;
  };
}
