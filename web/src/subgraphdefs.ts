// Subgraph definitions (the workflow's `subgraphs`) as node types of the catalog, and the user's
// library of them. A definition is the server's format (nodeflow/workflow.py `Subgraph`): declared
// inputs and outputs, inner nodes reading inputs as links from the reserved node `inputs`.
import type { InputDef, NodeDef, WorkflowJson } from "./api";
import { catalog, PRIMITIVES } from "./catalog";

export interface SubgraphDef {
  description?: string;
  inputs: Record<string, { type: string; default?: unknown }>;
  outputs: Record<string, { from: string; type: string }>;
  nodes: WorkflowJson["nodes"];
  ui?: Record<string, unknown>;
}
export type SubgraphDefs = Record<string, SubgraphDef>;

/** The node inner links read a declared input from: `{"from": "inputs.<name>"}`. */
export const INPUTS_ID = "inputs";
/** Category of editor-only node types (a subgraph's inputs and outputs while it is edited). */
export const INTERNAL = "@internal";
export const SUBGRAPH_CATEGORY = "subgraphs";
export const LIBRARY_CATEGORY = "subgraph library";
const LIBRARY_KEY = "nodeflow.subgraphs";

const JSON_TYPES: Record<string, string> = { INT: "integer", FLOAT: "number", STRING: "string", BOOLEAN: "boolean" };

/** How an instance shows a declared input: a primitive as a widget (its value kept on the
 * instance, convertible to a socket), anything else as a socket. */
function declaredInput(port: { type: string; default?: unknown }): InputDef {
  const required = port.default === undefined || port.default === null;
  if (PRIMITIVES.has(port.type)) {
    const schema: InputDef["schema"] = { type: JSON_TYPES[port.type] };
    if (!required) schema.default = port.default;
    return { kind: "widget", type: port.type, required, schema, ...(required ? {} : { default: port.default }) };
  }
  return { kind: "socket", type: port.type, required };
}

/** A file's definition may leave out `inputs`, `outputs` or `nodes` (the server defaults them to
 * empty) or be malformed (the server reports it): read it without trusting its shape. */
function part<T>(value: T | undefined): T {
  return (value && typeof value === "object" && !Array.isArray(value) ? value : {}) as T;
}

export function definitionNode(name: string, def: SubgraphDef, category: string): NodeDef {
  const inputs = part(def.inputs);
  return {
    type: name,
    display_name: name,
    category,
    description: (typeof def.description === "string" && def.description) || `Subgraph: ${Object.keys(part(def.nodes)).length} nodes`,
    inputs: Object.fromEntries(
      Object.entries(inputs).map(([k, v]) => [k, declaredInput({ type: String(part(v).type ?? "*"), default: part(v).default })]),
    ),
    outputs: Object.entries(part(def.outputs)).map(([k, v]) => ({ name: k, type: String(part(v).type ?? "*") })),
    output_node: false,
    plugin: "",
  };
}

let registered = new Set<string>();

/** Make the workflow's definitions (and the library's) node types; forget the previous ones. */
export function registerSubgraphs(defs: SubgraphDefs | undefined) {
  for (const name of registered) delete catalog.nodes[name];
  registered = new Set();
  const add = (name: string, def: SubgraphDef, category: string) => {
    if (catalog.nodes[name]) return; // a server node type (or the workflow's own) wins
    catalog.nodes[name] = definitionNode(name, def, category);
    registered.add(name);
  };
  for (const [name, def] of Object.entries(defs ?? {})) {
    if (def && typeof def === "object") add(name, def, SUBGRAPH_CATEGORY);
  }
  for (const [name, entry] of Object.entries(readLibrary())) add(name, entry[name], LIBRARY_CATEGORY);
}

export function isSubgraphType(type: string): boolean {
  return registered.has(type);
}

/** The definitions `name` needs, itself included (nested ones through their node types). */
export function closure(name: string, defs: SubgraphDefs): SubgraphDefs {
  const out: SubgraphDefs = {};
  const visit = (n: string) => {
    if (out[n] || !defs[n]) return;
    out[n] = defs[n];
    for (const entry of Object.values(part(defs[n].nodes))) visit(String(part(entry).type ?? ""));
  };
  visit(name);
  return out;
}

// --- the user's library (this browser) ---------------------------------------------------

/** `{name: {name: def, ...the definitions it uses}}`: each entry is self-contained. */
export function readLibrary(): Record<string, SubgraphDefs> {
  try {
    const raw = JSON.parse(localStorage.getItem(LIBRARY_KEY) ?? "{}") as unknown;
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) return {};
    return Object.fromEntries(
      Object.entries(raw as Record<string, SubgraphDefs>).filter(([name, defs]) => defs && typeof defs === "object" && defs[name]),
    );
  } catch {
    return {};
  }
}

export function saveToLibrary(name: string, defs: SubgraphDefs) {
  const library = readLibrary();
  library[name] = structuredClone(closure(name, defs));
  localStorage.setItem(LIBRARY_KEY, JSON.stringify(library));
}

/** The library's definitions a new node of `type` brings into a workflow (none if not one). */
export function libraryDefinitions(type: string): SubgraphDefs {
  return structuredClone(readLibrary()[type] ?? {});
}
