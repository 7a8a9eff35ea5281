/**
 * A TypeBox schema as it is published: plain draft-07 JSON Schema, with
 * `$schema` first and only what JSON keeps (TypeBox's symbol keys go).
 */
export function draft07(fields: Record<string, unknown>): object {
  return JSON.parse(JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...fields })) as object;
}
