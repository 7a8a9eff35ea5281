/**
 * The schema files gateway/schema/ publishes, each built from its TypeBox
 * source: what `npm run schema` writes, and what the test that keeps the
 * files true compares them with.
 */
import type { SchemaFileName } from '../schema-file.js';
import { adminJsonSchema } from './admin.js';
import { configJsonSchema } from './config.js';
import { routeJsonSchema } from './route.js';

export const PUBLISHED_SCHEMAS: Record<SchemaFileName, () => object> = {
  'config.schema.json': configJsonSchema,
  'route.schema.json': routeJsonSchema,
  'admin.schema.json': adminJsonSchema,
};
