#!/usr/bin/env node
// Generates src/events.ts, the payload types of every /ws event, from the
// AsyncAPI document (docs/asyncapi.json, itself generated from the Rust types
// that parse and build the frames), so the client's types cannot drift from
// the server's.
//
//   node scripts/gen-types.mjs          writes src/events.ts
//   node scripts/gen-types.mjs --check  fails if src/events.ts is not what it would write
//
// What it writes: one type per component schema (JSON Schema draft 7, as
// schemars makes them), `ServerEvents` (event name → data) from the
// `receive` operations, `ClientRequests` (event name → [data, reply data])
// from the `send` operations and their replies, and `EventsNeedingAck`.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE = join(here, '../../../docs/asyncapi.json');
const TARGET = join(here, '../src/events.ts');
const SCHEMAS = '#/components/schemas/';

/// A TypeScript identifier for a schema name (schemars names are Rust type names).
const typeName = (name) => name.replace(/[^A-Za-z0-9_]/g, '_');

/// A description's paragraphs wrapped to lines of at most `width` characters.
function wrap(text, width) {
  const lines = [];
  for (const paragraph of String(text).trim().split('\n')) {
    let line = '';
    for (const word of paragraph.split(/\s+/).filter(Boolean)) {
      if (line && line.length + 1 + word.length > width) {
        lines.push(line);
        line = word;
      } else {
        line = line ? `${line} ${word}` : word;
      }
    }
    lines.push(line);
  }
  return lines;
}

/// `/** … */` from a schema's description, indented.
function doc(schema, indent = '') {
  const text = schema && typeof schema === 'object' && schema.description;
  if (!text) return '';
  const lines = wrap(text, 96 - indent.length);
  if (lines.length === 1) return `${indent}/** ${lines[0].replace(/\*\//g, '*\\/')} */\n`;
  return `${indent}/**\n${lines.map((line) => `${indent} * ${line.replace(/\*\//g, '*\\/')}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

const literal = (value) => JSON.stringify(value).replace(/"/g, "'");
const union = (parts) => [...new Set(parts)].join(' | ') || 'never';
const isObjectSchema = (schema) => schema.type === 'object' || (schema.properties && !schema.type);

/// The TypeScript type of a schema (inline).
function tsType(schema, indent = '') {
  if (schema === true || schema === undefined || schema === null) return 'unknown';
  if (schema === false) return 'never';
  if (schema.$ref) {
    if (!schema.$ref.startsWith(SCHEMAS)) throw new Error(`unsupported $ref ${schema.$ref}`);
    return typeName(schema.$ref.slice(SCHEMAS.length));
  }
  if ('const' in schema) return literal(schema.const);
  if (Array.isArray(schema.enum)) return union(schema.enum.map(literal));
  for (const key of ['oneOf', 'anyOf']) {
    if (Array.isArray(schema[key])) {
      const own = { ...schema };
      delete own[key];
      delete own.description;
      return union(schema[key].map((alternative) => tsType({ ...own, ...alternative }, indent)));
    }
  }
  if (Array.isArray(schema.allOf)) return schema.allOf.map((part) => tsType(part, indent)).join(' & ');
  if (Array.isArray(schema.type)) return union(schema.type.map((type) => tsType({ ...schema, type }, indent)));
  switch (schema.type) {
    case 'null':
      return 'null';
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array': {
      const item = tsType(schema.items, indent);
      return /^[A-Za-z0-9_']+$/.test(item) ? `${item}[]` : `Array<${item}>`;
    }
    case 'object':
    case undefined:
      if (schema.properties || schema.type === 'object') return objectType(schema, indent);
      return 'unknown';
    default:
      throw new Error(`unsupported schema type ${JSON.stringify(schema.type)}`);
  }
}

/// `{ … }` for an object schema, one documented property per line.
function objectType(schema, indent) {
  const properties = Object.entries(schema.properties ?? {});
  const required = new Set(schema.required ?? []);
  const extra = schema.additionalProperties;
  if (properties.length === 0) {
    if (extra && extra !== true) return `Record<string, ${tsType(extra, indent)}>`;
    return extra === false ? 'Record<string, never>' : 'Record<string, unknown>';
  }
  const inner = `${indent}  `;
  const lines = properties.map(([name, property]) => {
    const key = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : literal(name);
    return `${doc(property, inner)}${inner}${key}${required.has(name) ? '' : '?'}: ${tsType(property, inner)};`;
  });
  return `{\n${lines.join('\n')}\n${indent}}`;
}

/// One exported declaration per component schema.
function declaration(name, schema) {
  const type = tsType(schema);
  const head = doc(schema);
  if (isObjectSchema(schema) && type.startsWith('{')) return `${head}export interface ${typeName(name)} ${type}\n`;
  // A union of documented constants (error codes): one per line, each with its doc.
  const constants = schema.oneOf ?? schema.anyOf;
  if (Array.isArray(constants) && constants.every((alternative) => 'const' in alternative)) {
    const lines = constants.map((alternative) => `${doc(alternative, '  ')}  | ${literal(alternative.const)}`);
    return `${head}export type ${typeName(name)} =\n${lines.join('\n')};\n`;
  }
  return `${head}export type ${typeName(name)} = ${type};\n`;
}

/// The component message a `#/channels/…/messages/key` (or `#/components/messages/key`) reference names.
function messageOf(document, ref) {
  const key = ref.$ref.split('/').at(-1);
  const message = document.components.messages[key];
  if (!message) throw new Error(`no message ${key}`);
  return message;
}

/// The type of a message's `data` (its frame's `data` property), or `undefined`.
function dataType(message) {
  const data = message.payload?.properties?.data;
  if (!data || (!data.$ref && !data.type)) return 'undefined';
  return tsType(data);
}

export function generate(document) {
  if (!String(document.asyncapi ?? '').startsWith('3.')) throw new Error('not an AsyncAPI 3 document');
  const schemas = document.components?.schemas ?? {};
  const operations = Object.entries(document.operations ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const server = [];
  const requests = [];
  const needsAck = [];
  for (const [, operation] of operations) {
    for (const ref of operation.messages ?? []) {
      const message = messageOf(document, ref);
      const event = message.name;
      if (operation.action === 'receive') {
        if (event === 'error') continue;
        server.push(`  ${literal(event)}: ${dataType(message)};`);
        if (message['x-courier-needs-ack']) needsAck.push(literal(event));
      } else if (operation.action === 'send' && operation.reply) {
        const replies = operation.reply.messages.map((reply) => messageOf(document, reply)).filter((reply) => reply.name !== 'error');
        const reply = union(replies.map(dataType));
        requests.push(`  ${literal(event)}: [${dataType(message)}, ${reply}];`);
      }
    }
  }
  const names = Object.keys(schemas).sort();
  const out = [
    '// GENERATED by scripts/gen-types.mjs from docs/asyncapi.json (itself generated',
    '// from the Rust types that parse and build the frames). Do not edit: run',
    '// `npm run gen-types` after the document changes; `npm run check` fails until then.',
    '',
    ...names.map((name) => declaration(name, schemas[name])),
    '/** The body of an `error` frame (and of a REST error\'s `error`). */',
    'export type ErrorBody = ClientError;',
    '',
    '/** `messageType` values; `text` when absent. */',
    "export type MessageType = NonNullable<SendMessage['messageType']>;",
    '',
    '/** Server events: event name → data. */',
    'export interface ServerEvents {',
    ...server,
    '}',
    '',
    '/** Client events that get a reply: event name → [data, reply data]. */',
    'export interface ClientRequests {',
    ...requests,
    '}',
    '',
    '/** Server events the client must acknowledge (`{"event": "ack", "id": N}`) or they come again. */',
    `export type EventsNeedingAck = ${union(needsAck)};`,
    '',
  ];
  return out.join('\n');
}

function main() {
  const check = process.argv.includes('--check');
  let document;
  try {
    document = JSON.parse(readFileSync(SOURCE, 'utf8'));
  } catch (error) {
    console.error(`gen-types: cannot read ${SOURCE}: ${error.message}`);
    process.exit(1);
  }
  const generated = generate(document);
  if (check) {
    const current = readFileSync(TARGET, 'utf8');
    if (current !== generated) {
      console.error('gen-types: src/events.ts is not what docs/asyncapi.json gives: run `npm run gen-types --prefix clients/js`, then `npm run build`');
      process.exit(1);
    }
    console.log('gen-types: src/events.ts matches docs/asyncapi.json');
    return;
  }
  writeFileSync(TARGET, generated);
  console.log(`gen-types: wrote ${TARGET}`);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
