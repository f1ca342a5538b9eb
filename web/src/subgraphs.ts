// Subgraphs on the canvas: turning selected nodes into one, opening one for editing (its inner
// nodes on the canvas between an inputs and an outputs node) and going back, saving one to the
// library. Everything is done on workflow JSON, the format the server runs, so what the editor
// makes is what `nodeflow/subgraphs.py` expands.
import type { WorkflowJson } from "./api";
import { catalog, convertible, defaultValue } from "./catalog";
import { graph, isLink } from "./graph";
import {
  INPUTS_ID,
  INTERNAL,
  registerSubgraphs,
  saveToLibrary,
  type SubgraphDef,
  type SubgraphDefs,
} from "./subgraphdefs";

/** Editor-only node types standing for the open subgraph's declared inputs and outputs. */
export const INPUTS_TYPE = "@SubgraphInputs";
export const OUTPUTS_TYPE = "@SubgraphOutputs";

type UiNodes = Record<string, { pos?: number[] } & Record<string, unknown>>;

interface Frame {
  /** The definition being edited and the instance it was opened from. */
  name: string;
  instance: string;
  /** The workflow around it (the one the instance is in), as it was when it was opened. */
  parent: WorkflowJson;
  /** Its inputs and outputs nodes' ids on the canvas (`outputs` unless an inner node has it). */
  outputsId: string;
  history: ReturnType<typeof graph.takeHistory>;
}

const stack: Frame[] = [];
const listeners = new Set<() => void>();
let snapshot: string[] = [];

/** The path of open subgraphs, outermost first (for the breadcrumb bar). */
export function openPath(): string[] {
  return snapshot;
}

export function subscribePath(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function changed() {
  snapshot = stack.map((f) => f.name);
  graph.outer = stack.length ? composeTop : null;
  graph.onSubgraphs = stack.length ? followDefinition : null;
  for (const l of listeners) l();
}

function uiNodes(workflow: WorkflowJson): UiNodes {
  const ui = workflow.ui as { nodes?: UiNodes } | undefined;
  return ui?.nodes ?? {};
}

function typeOfOutput(nodeType: string, output: string): string {
  return catalog.nodes[nodeType]?.outputs.find((o) => o.name === output)?.type ?? "*";
}

function unique(base: string, taken: Set<string>): string {
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}_${i}`)) return `${base}_${i}`;
}

// --- convert a selection ------------------------------------------------------------------

/** Replace the selected nodes by one instance of a new subgraph holding them; its declared
 * inputs are what fed them from outside, its outputs what they fed outside. Returns the new
 * definition's name, or null when fewer than one node is selected. */
export function convertSelection(name?: string): string | null {
  const ids = new Set(
    graph.state.nodes
      .filter((n) => n.selected && n.type === "nf" && !String(n.data.type).startsWith("@"))
      .map((n) => n.id),
  );
  if (!ids.size) return null;
  const workflow = structuredClone(graph.toWorkflow());
  const defs: SubgraphDefs = (workflow.subgraphs as SubgraphDefs | undefined) ?? {};
  const typeName = unique(name ?? "Subgraph", new Set([...Object.keys(defs), ...Object.keys(catalog.nodes)]));
  const def: SubgraphDef = { inputs: {}, outputs: {}, nodes: {} };
  const instanceInputs: Record<string, unknown> = {};
  const bySource = new Map<string, string>(); // outside "node.output" -> declared input
  const ui = uiNodes(workflow);
  const innerUi: UiNodes = {};

  for (const id of ids) {
    const entry = workflow.nodes[id];
    for (const [port, value] of Object.entries(entry.inputs)) {
      if (!isLink(value)) continue;
      const [source, output] = value.from.split(".", 2);
      if (ids.has(source)) continue;
      let declared = bySource.get(value.from);
      if (!declared) {
        declared = unique(port, new Set(Object.keys(def.inputs)));
        bySource.set(value.from, declared);
        const sourceType = workflow.nodes[source]?.type ?? "";
        def.inputs[declared] = { type: typeOfOutput(sourceType, output) };
        instanceInputs[declared] = { from: value.from };
      }
      entry.inputs[port] = { from: `${INPUTS_ID}.${declared}` };
    }
    def.nodes[id] = entry;
    if (ui[id]) innerUi[id] = ui[id];
    delete workflow.nodes[id];
    delete ui[id];
  }

  const taken = new Set(Object.keys(workflow.nodes));
  const instance = unique(typeName.toLowerCase().replace(/[^a-z0-9_-]+/g, "") || "subgraph", taken);
  const byInner = new Map<string, string>(); // inner "node.output" -> declared output
  for (const entry of Object.values(workflow.nodes)) {
    for (const [port, value] of Object.entries(entry.inputs)) {
      if (!isLink(value)) continue;
      const [source, output] = value.from.split(".", 2);
      if (!ids.has(source)) continue;
      let declared = byInner.get(value.from);
      if (!declared) {
        declared = unique(output, new Set(Object.keys(def.outputs)));
        byInner.set(value.from, declared);
        def.outputs[declared] = { from: value.from, type: typeOfOutput(def.nodes[source].type, output) };
      }
      entry.inputs[port] = { from: `${instance}.${declared}` };
    }
  }
  const reroutes = ((workflow.ui as Record<string, unknown>)?.reroutes ?? {}) as Record<string, unknown>;
  const innerReroutes: Record<string, unknown> = {};
  for (const key of Object.keys(reroutes)) {
    if (ids.has(key.split(".")[0])) {
      innerReroutes[key] = reroutes[key];
      delete reroutes[key];
    }
  }
  def.ui = { nodes: innerUi, ...(Object.keys(innerReroutes).length ? { reroutes: innerReroutes } : {}) };

  const xs = Object.values(innerUi).map((u) => u.pos?.[0] ?? 0);
  const ys = Object.values(innerUi).map((u) => u.pos?.[1] ?? 0);
  workflow.nodes[instance] = { type: typeName, inputs: instanceInputs };
  ui[instance] = { pos: [Math.round(Math.min(...xs, Infinity) || 0), Math.round(Math.min(...ys, Infinity) || 0)] };
  workflow.subgraphs = { ...defs, [typeName]: def };
  graph.loadWorkflow(workflow, { markSaved: false });
  return typeName;
}

// --- open and close -------------------------------------------------------------------------

/** The canvas for editing a definition: its nodes, an inputs node feeding them and an outputs
 * node they feed. Every definition of the workflow comes along (nested instances need them). */
function canvasOf(def: SubgraphDef, defs: SubgraphDefs, outputsId: string): WorkflowJson {
  const nodes: WorkflowJson["nodes"] = structuredClone(def.nodes ?? {});
  nodes[INPUTS_ID] = { type: INPUTS_TYPE, inputs: {} };
  nodes[outputsId] = {
    type: OUTPUTS_TYPE,
    inputs: Object.fromEntries(Object.entries(def.outputs ?? {}).map(([k, v]) => [k, { from: v.from }])),
  };
  const ui = structuredClone(def.ui ?? {}) as Record<string, unknown> & { nodes?: UiNodes };
  const placed = ui.nodes ?? {};
  const xs = Object.values(placed).map((u) => u.pos?.[0] ?? 0);
  const ys = Object.values(placed).map((u) => u.pos?.[1] ?? 0);
  const left = xs.length ? Math.min(...xs) : 0;
  const right = xs.length ? Math.max(...xs) : 0;
  const top = ys.length ? Math.min(...ys) : 0;
  placed[INPUTS_ID] ??= { pos: [left - 320, top] };
  placed[outputsId] ??= { pos: [right + 340, top] };
  ui.nodes = placed;
  return { version: 1, nodes, ui, subgraphs: defs };
}

/** Editor-only node types for the definition's inputs (as outputs) and outputs (as inputs). */
function registerEditing(def: SubgraphDef) {
  catalog.nodes[INPUTS_TYPE] = {
    type: INPUTS_TYPE,
    display_name: "Subgraph inputs",
    category: INTERNAL,
    description: "What the instance's inputs bring in",
    inputs: {},
    outputs: Object.entries(def.inputs ?? {}).map(([name, p]) => ({ name, type: p.type })),
    output_node: false,
    plugin: "",
  };
  catalog.nodes[OUTPUTS_TYPE] = {
    type: OUTPUTS_TYPE,
    display_name: "Subgraph outputs",
    category: INTERNAL,
    description: "What the instance's outputs give",
    inputs: Object.fromEntries(
      Object.entries(def.outputs ?? {}).map(([name, p]) => [name, { kind: "socket" as const, type: p.type, required: false }]),
    ),
    outputs: [],
    output_node: false,
    plugin: "",
  };
}

/** The definition as the canvas now has it (while it is open for editing). */
function definitionFrom(canvas: WorkflowJson, frame: Frame): { def: SubgraphDef; defs: SubgraphDefs } {
  const defs = structuredClone((canvas.subgraphs as SubgraphDefs | undefined) ?? {});
  const before = defs[frame.name] ?? (frame.parent.subgraphs as SubgraphDefs)[frame.name];
  const nodes = structuredClone(canvas.nodes);
  const outs = nodes[frame.outputsId];
  delete nodes[INPUTS_ID];
  delete nodes[frame.outputsId];
  const outputs: SubgraphDef["outputs"] = {};
  for (const [name, declared] of Object.entries(before.outputs ?? {})) {
    const link = outs?.inputs[name];
    if (isLink(link)) outputs[name] = { from: link.from, type: declared.type };
  }
  const def: SubgraphDef = { ...before, outputs, nodes, ui: structuredClone(canvas.ui ?? {}) };
  return { def, defs: { ...defs, [frame.name]: def } };
}

/** The whole workflow while subgraphs are open: each level's definition put back in the one
 * around it. */
function composeTop(inner: WorkflowJson): WorkflowJson {
  let current = inner;
  for (let i = stack.length - 1; i >= 0; i--) {
    const { defs } = definitionFrom(current, stack[i]);
    current = { ...structuredClone(stack[i].parent), subgraphs: defs };
  }
  return current;
}

/** Undo and redo inside an open subgraph bring its definition back: so its inputs and outputs
 * nodes show the declared ports of that moment. */
function followDefinition(defs: SubgraphDefs | undefined) {
  const frame = stack[stack.length - 1];
  const def = frame && defs?.[frame.name];
  if (def) registerEditing(def);
}

/** Open the definition of the instance `nodeId` on the canvas. */
export function openSubgraph(nodeId: string): boolean {
  const node = graph.node(nodeId);
  if (!node || node.type !== "nf") return false;
  const parent = graph.toWorkflow();
  const defs = (parent.subgraphs as SubgraphDefs | undefined) ?? {};
  const name = String(node.data.type);
  const def = defs[name];
  if (!def) return false;
  const outputsId = def.nodes?.outputs ? "outputs_" : "outputs";
  stack.push({ name, instance: nodeId, parent, outputsId, history: graph.takeHistory() });
  registerEditing(def);
  changed();
  graph.loadWorkflow(canvasOf(def, defs, outputsId), { undoable: false, markSaved: false });
  return true;
}

/** Back to the workflow around the open subgraph, with the definition as edited. */
export function closeSubgraph(): boolean {
  const frame = stack[stack.length - 1];
  if (!frame) return false;
  const { defs } = definitionFrom(graph.toWorkflow(), frame);
  const parent: WorkflowJson = { ...frame.parent, subgraphs: defs };
  stack.pop();
  changed();
  if (stack.length) registerEditing(defs[stack[stack.length - 1].name]);
  graph.loadWorkflow(parent, { undoable: false, markSaved: false });
  graph.putHistory(frame.history);
  return true;
}

/** Forget the open subgraphs: the canvas is being replaced by another workflow. */
export function leaveAll() {
  if (!stack.length) return;
  stack.length = 0;
  changed();
}

/** Keep the definition of the instance `nodeId` in this browser's library, as a node type of
 * every workflow (adding one copies the definition into that workflow). */
export function saveInstanceToLibrary(nodeId: string): boolean {
  const node = graph.node(nodeId);
  const defs = graph.state.subgraphs ?? {};
  if (!node || node.type !== "nf" || !defs[String(node.data.type)]) return false;
  saveToLibrary(String(node.data.type), defs);
  registerSubgraphs(defs); // the library's list of node types changed
  return true;
}

// --- declaring more inputs and outputs (while a subgraph is open) ---------------------------

/** Change the open definition and its canvas together (one undo step), then redraw. */
function editOpen(change: (canvas: WorkflowJson, def: SubgraphDef, outputsId: string) => string | null): string | null {
  const frame = stack[stack.length - 1];
  if (!frame) return null;
  const canvas = structuredClone(graph.toWorkflow());
  const defs = (canvas.subgraphs as SubgraphDefs | undefined) ?? {};
  const def = defs[frame.name];
  if (!def) return null;
  def.inputs ??= {};
  def.outputs ??= {};
  const name = change(canvas, def, frame.outputsId);
  if (name === null) return null;
  registerEditing(def);
  graph.loadWorkflow(canvas, { markSaved: false });
  return name;
}

/** Make an inner node's unlinked input (a socket, or a widget that can be one) a declared input
 * of the open subgraph, fed through the inputs node; a widget's value becomes its default.
 * Returns the declared name. */
export function exposeInput(nodeId: string, input: string): string | null {
  return editOpen((canvas, def) => {
    const entry = canvas.nodes[nodeId];
    const spec = entry && catalog.nodes[entry.type]?.inputs[input];
    if (!spec || isLink(entry.inputs[input]) || (spec.kind === "widget" && !convertible(spec))) return null;
    const name = unique(input, new Set(Object.keys(def.inputs)));
    const value = entry.inputs[input] ?? (spec.kind === "widget" ? defaultValue(spec) : undefined);
    def.inputs[name] = value === undefined ? { type: spec.type } : { type: spec.type, default: value };
    entry.inputs[input] = { from: `${INPUTS_ID}.${name}` };
    if (spec.kind === "widget") {
      const ui = (uiNodes(canvas)[nodeId] ??= {}) as { converted?: string[] };
      ui.converted = [...new Set([...(ui.converted ?? []), input])];
    }
    return name;
  });
}

/** Make an inner node's output a declared output of the open subgraph. */
export function exposeOutput(nodeId: string, output: string): string | null {
  return editOpen((canvas, def, outputsId) => {
    const entry = canvas.nodes[nodeId];
    const type = entry && catalog.nodes[entry.type]?.outputs.find((o) => o.name === output)?.type;
    if (!type) return null;
    const name = unique(output, new Set(Object.keys(def.outputs)));
    def.outputs[name] = { from: `${nodeId}.${output}`, type };
    canvas.nodes[outputsId].inputs[name] = { from: `${nodeId}.${output}` };
    return name;
  });
}
