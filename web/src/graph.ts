// The graph being edited: React Flow nodes and edges in a small external store, with undo/redo,
// clipboard, and conversion to and from the workflow JSON (version 1) the server runs.
import {
  applyEdgeChanges,
  applyNodeChanges,
  type Connection,
  type Edge,
  type EdgeChange,
  type Node,
  type NodeChange,
  type XYPosition,
} from "@xyflow/react";
import type { WorkflowJson } from "./api";
import {
  catalog,
  compatible,
  convertible,
  defaultValue,
  isSeed,
  requirements,
  typeColor,
} from "./catalog";
import { adoptTargetValue } from "./primitives";
import { libraryDefinitions, registerSubgraphs, type SubgraphDefs } from "./subgraphdefs";

export type SeedMode = "randomize" | "fixed" | "increment";
/** A node's workflow `mode`: bypassed (its inputs pass through) or muted (it does not run). */
export type NodeMode = "bypass" | "mute";
export const NODE_MODES: NodeMode[] = ["bypass", "mute"];
export const SEED_MODES: SeedMode[] = ["randomize", "fixed", "increment"];

export interface NfData extends Record<string, unknown> {
  type: string;
  values: Record<string, unknown>;
  converted: string[];
  seedControl: Record<string, SeedMode>;
  /** Inputs the catalog does not know (or links it cannot draw), written back verbatim. */
  extra: Record<string, unknown>;
  /** For a node type the server does not know: the sockets its links use. */
  unknown?: { inputs: string[]; outputs: string[] };
  title?: string;
  mode?: NodeMode;
  /** Drawn as its title bar only (`ui.nodes[id].collapsed`). */
  collapsed?: boolean;
  /** Widgets the loaded workflow set explicitly: written back even when equal to the default. */
  present?: string[];
  /** Other per-node ui keys from a loaded workflow, written back verbatim. */
  uiExtra?: Record<string, unknown>;
}
export interface NoteData extends Record<string, unknown> {
  text: string;
}
export interface GroupData extends Record<string, unknown> {
  title: string;
  color?: string;
}

export type NfNode = Node<NfData, "nf">;
export type NoteNode = Node<NoteData, "note">;
export type GroupNode = Node<GroupData, "group">;
export type AnyNode = NfNode | NoteNode | GroupNode;

export interface GraphState {
  nodes: AnyNode[];
  edges: Edge[];
  /** The workflow's subgraph definitions (node types of this workflow), part of undo. */
  subgraphs?: SubgraphDefs;
}

const STORAGE_KEY = "nodeflow.workflow";
/** The fingerprint of the canvas as last loaded, saved to a file or cleared. */
const SAVED_KEY = "nodeflow.saved";
const HISTORY_LIMIT = 200;

export function edgeId(source: string, sourceHandle: string, target: string, targetHandle: string) {
  return `${source}.${sourceHandle}>${target}.${targetHandle}`;
}

function makeEdge(source: string, sourceHandle: string, target: string, targetHandle: string, type?: string): Edge {
  const color = typeColor(type);
  return {
    id: edgeId(source, sourceHandle, target, targetHandle),
    source,
    sourceHandle,
    target,
    targetHandle,
    data: { type },
    style: { stroke: color },
  };
}

/** `ui.reroutes["<node>.<input>"]`: the [x, y] points the link into that input passes through. */
function readPoints(raw: unknown): XYPosition[] {
  if (!Array.isArray(raw)) return [];
  return raw.map(readPos).filter((p): p is XYPosition => !!p);
}

export function isLink(value: unknown): value is { from: string } {
  return (
    !!value &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    Object.keys(value).length === 1 &&
    typeof (value as { from?: unknown }).from === "string"
  );
}

function splitRef(ref: string): [string, string] | null {
  const dot = ref.indexOf(".");
  if (dot <= 0 || dot === ref.length - 1) return null;
  return [ref.slice(0, dot), ref.slice(dot + 1)];
}

/** The type of an output socket, or undefined if the node has no such output. */
export function outputType(node: AnyNode | undefined, name: string): string | undefined {
  if (!node || node.type !== "nf") return undefined;
  const data = node.data as NfData;
  const def = catalog.nodes[data.type];
  if (!def) return data.unknown?.outputs.includes(name) ? "*" : undefined;
  return def.outputs.find((o) => o.name === name)?.type;
}

/** The type of an input socket (a socket, or a widget converted to one), or undefined. */
export function inputType(node: AnyNode | undefined, name: string): string | undefined {
  if (!node || node.type !== "nf") return undefined;
  const data = node.data as NfData;
  const def = catalog.nodes[data.type];
  if (!def) return data.unknown?.inputs.includes(name) ? "*" : undefined;
  const input = def.inputs[name];
  if (!input) return undefined;
  if (input.kind === "socket") return input.type;
  return data.converted.includes(name) ? input.type : undefined;
}

function slug(type: string): string {
  return type.toLowerCase().replace(/[^a-z0-9_-]+/g, "") || "node";
}

export function makeNfNode(type: string, position: XYPosition, id: string): NfNode {
    const def = catalog.nodes[type];
    const values: Record<string, unknown> = {};
    const seedControl: Record<string, SeedMode> = {};
    if (def) {
      for (const [name, input] of Object.entries(def.inputs)) {
        if (input.kind !== "widget") continue;
        values[name] = defaultValue(input);
        if (isSeed(input)) seedControl[name] = "randomize";
      }
    }
    return {
      id,
      type: "nf",
      position,
      data: { type, values, converted: [], seedControl, extra: {} },
    };
}

export class GraphStore {
  state: GraphState = { nodes: [], edges: [] };
  private past: GraphState[] = [];
  private future: GraphState[] = [];
  private lastKey: string | null = null;
  private lastKeyTime = 0;
  private listeners = new Set<() => void>();
  /** Top-level and ui keys of the loaded workflow that the editor does not use, kept. */
  private workflowExtra: Record<string, unknown> = {};
  private uiExtra: Record<string, unknown> = {};
  private clipboard: GraphState | null = null;
  private saveTimer: number | undefined;
  /** fingerprint() of the canvas when it was last loaded, saved to a file or cleared. */
  private saved = fingerprint({ version: 1, nodes: {} });
  /** Called after every change that should be persisted (set by the app). */
  onChange: (() => void) | null = null;
  /** While a subgraph is open for editing: the whole workflow, given the canvas's (set by
   * `subgraphs.ts`). Saving, queueing and persisting use the whole workflow. */
  outer: ((inner: WorkflowJson) => WorkflowJson) | null = null;
  /** Called when the definitions change (an edit, undo, redo), before the canvas redraws. */
  onSubgraphs: ((defs: SubgraphDefs | undefined) => void) | null = null;

  subscribe = (listener: () => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };
  getSnapshot = () => this.state;

  private emit(persist = true) {
    for (const l of this.listeners) l();
    if (persist) {
      window.clearTimeout(this.saveTimer);
      this.saveTimer = window.setTimeout(() => this.persist(), 300);
      this.onChange?.();
    }
  }

  private set(state: GraphState, persist = true) {
    if (state.subgraphs !== this.state.subgraphs) {
      registerSubgraphs(state.subgraphs);
      this.onSubgraphs?.(state.subgraphs);
    }
    this.state = state;
    this.emit(persist);
  }

  get canUndo() {
    return this.past.length > 0;
  }
  get canRedo() {
    return this.future.length > 0;
  }

  /** Remember the current state for undo. Calls with the same key within a second coalesce. */
  checkpoint(key?: string) {
    const now = Date.now();
    if (key && key === this.lastKey && now - this.lastKeyTime < 1500) {
      this.lastKeyTime = now;
      return;
    }
    this.lastKey = key ?? null;
    this.lastKeyTime = now;
    this.past.push(this.state);
    if (this.past.length > HISTORY_LIMIT) this.past.shift();
    this.future = [];
  }

  undo() {
    const prev = this.past.pop();
    if (!prev) return;
    this.future.push(this.state);
    this.lastKey = null;
    this.set(prev);
  }

  redo() {
    const next = this.future.pop();
    if (!next) return;
    this.past.push(this.state);
    this.lastKey = null;
    this.set(next);
  }

  // --- React Flow change plumbing -------------------------------------------------------

  applyNodeChanges = (changes: NodeChange<AnyNode>[]) => {
    const persist = changes.some((c) => c.type !== "select" && c.type !== "dimensions");
    this.set({ ...this.state, nodes: applyNodeChanges(changes, this.state.nodes) }, persist);
  };

  applyEdgeChanges = (changes: EdgeChange<Edge>[]) => {
    const persist = changes.some((c) => c.type !== "select");
    this.set({ ...this.state, edges: applyEdgeChanges(changes, this.state.edges) }, persist);
  };

  node(id: string): AnyNode | undefined {
    return this.state.nodes.find((n) => n.id === id);
  }

  isValidConnection = (c: Connection | Edge): boolean => {
    if (!c.source || !c.target || c.source === c.target) return false;
    const out = outputType(this.node(c.source), c.sourceHandle ?? "");
    const inp = inputType(this.node(c.target), c.targetHandle ?? "");
    if (out === undefined || inp === undefined) return false;
    return compatible(out, inp);
  };

  connect = (c: Connection) => {
    if (!this.isValidConnection(c)) return;
    this.checkpoint();
    const type = outputType(this.node(c.source), c.sourceHandle!);
    const edges = this.state.edges.filter(
      (e) => !(e.target === c.target && e.targetHandle === c.targetHandle),
    );
    const edge = makeEdge(c.source, c.sourceHandle!, c.target, c.targetHandle!, type);
    edges.push(edge);
    this.set({ ...this.state, nodes: adoptTargetValue(this.state.nodes, edges, edge), edges });
  };

  removeEdge(id: string) {
    this.checkpoint();
    this.set({ ...this.state, edges: this.state.edges.filter((e) => e.id !== id) });
  }

  // --- editing ---------------------------------------------------------------------------

  uniqueId(base: string, taken?: Set<string>): string {
    const used = taken ?? new Set(this.state.nodes.map((n) => n.id));
    for (let i = 1; ; i++) {
      const id = `${base}_${i}`;
      if (!used.has(id)) return id;
    }
  }

  makeNode(type: string, position: XYPosition, id: string): NfNode {
    return makeNfNode(type, position, id);
  }

  addNode(type: string, position: XYPosition, select = true): string {
    if (!catalog.nodes[type]) throw new Error(`unknown node type ${type}`);
    this.checkpoint();
    const id = this.uniqueId(slug(type));
    const node = this.makeNode(type, position, id);
    node.selected = select;
    const nodes = select ? this.state.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)) : this.state.nodes;
    // a subgraph from the library: its definitions come along, so the workflow stays whole
    const brought = this.state.subgraphs?.[type] ? {} : libraryDefinitions(type);
    const subgraphs = Object.keys(brought).length ? { ...brought, ...this.state.subgraphs } : this.state.subgraphs;
    this.set({ ...this.state, nodes: [...nodes, node], subgraphs });
    return id;
  }

  addNote(position: XYPosition, text = ""): string {
    this.checkpoint();
    const id = this.uniqueId("note");
    const node: NoteNode = { id, type: "note", position, data: { text }, width: 240, height: 120 };
    this.set({ ...this.state, nodes: [...this.state.nodes, node] });
    return id;
  }

  addGroup(position: XYPosition, size = { width: 520, height: 360 }, title = "Group"): string {
    this.checkpoint();
    const id = this.uniqueId("group");
    const node: GroupNode = {
      id,
      type: "group",
      position,
      data: { title },
      width: size.width,
      height: size.height,
      zIndex: -1,
    };
    this.set({ ...this.state, nodes: [node, ...this.state.nodes] });
    return id;
  }

  /** A group around the selected nodes. */
  groupSelection(): string | null {
    const selected = this.state.nodes.filter((n) => n.selected && n.type !== "group");
    if (!selected.length) return null;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of selected) {
      const w = n.measured?.width ?? n.width ?? 240;
      const h = n.measured?.height ?? n.height ?? 120;
      x0 = Math.min(x0, n.position.x);
      y0 = Math.min(y0, n.position.y);
      x1 = Math.max(x1, n.position.x + w);
      y1 = Math.max(y1, n.position.y + h);
    }
    return this.addGroup({ x: x0 - 30, y: y0 - 60 }, { width: x1 - x0 + 60, height: y1 - y0 + 90 });
  }

  updateData(id: string, patch: Record<string, unknown>, key?: string) {
    this.checkpoint(key);
    this.set({
      ...this.state,
      nodes: this.state.nodes.map((n) =>
        n.id === id ? ({ ...n, data: { ...n.data, ...patch } } as AnyNode) : n,
      ),
    });
  }

  setValue(id: string, name: string, value: unknown) {
    const node = this.node(id);
    if (!node || node.type !== "nf") return;
    this.updateData(id, { values: { ...node.data.values, [name]: value } }, `value:${id}:${name}`);
  }

  /** The points a link passes through (reroutes); `key` merges a drag into one undo step. */
  setReroutes(edgeId: string, points: XYPosition[], key?: string) {
    this.checkpoint(key);
    this.set({
      ...this.state,
      edges: this.state.edges.map((e) =>
        e.id === edgeId ? { ...e, data: { ...e.data, points: points.length ? points : undefined } } : e,
      ),
    });
  }

  /** Bypass or mute these nodes; if every one already has that mode, back to normal. */
  toggleMode(ids: string[], mode: NodeMode) {
    const targets = this.state.nodes.filter((n): n is NfNode => n.type === "nf" && ids.includes(n.id));
    if (!targets.length) return;
    const next = targets.every((n) => n.data.mode === mode) ? undefined : mode;
    this.checkpoint();
    const chosen = new Set(targets.map((n) => n.id));
    this.set({
      ...this.state,
      nodes: this.state.nodes.map((n) =>
        chosen.has(n.id) ? ({ ...n, data: { ...n.data, mode: next } } as AnyNode) : n,
      ),
    });
  }

  setSeedMode(id: string, name: string, mode: SeedMode) {
    const node = this.node(id);
    if (!node || node.type !== "nf") return;
    this.updateData(id, { seedControl: { ...node.data.seedControl, [name]: mode } });
  }

  resizeNode(id: string, width: number, height: number) {
    this.set({
      ...this.state,
      nodes: this.state.nodes.map((n) => (n.id === id ? { ...n, width, height } : n)),
    });
  }

  /** Turn a widget into an input socket, or back (dropping its link). */
  toggleConvert(id: string, name: string) {
    const node = this.node(id);
    if (!node || node.type !== "nf") return;
    const def = catalog.nodes[node.data.type]?.inputs[name];
    if (!def || !convertible(def)) return;
    this.checkpoint();
    const converted = node.data.converted.includes(name)
      ? node.data.converted.filter((c) => c !== name)
      : [...node.data.converted, name];
    const edges = converted.includes(name)
      ? this.state.edges
      : this.state.edges.filter((e) => !(e.target === id && e.targetHandle === name));
    this.set({
      ...this.state,
      nodes: this.state.nodes.map((n) =>
        n.id === id ? ({ ...n, data: { ...n.data, converted } } as AnyNode) : n,
      ),
      edges,
    });
  }

  removeNodes(ids: string[]) {
    if (!ids.length) return;
    this.checkpoint();
    const gone = new Set(ids);
    this.set({
      ...this.state,
      nodes: this.state.nodes.filter((n) => !gone.has(n.id)),
      edges: this.state.edges.filter((e) => !gone.has(e.source) && !gone.has(e.target)),
    });
  }

  moveNodes(positions: Map<string, XYPosition>) {
    this.set({
      ...this.state,
      nodes: this.state.nodes.map((n) => {
        const p = positions.get(n.id);
        return p ? { ...n, position: p } : n;
      }),
    });
  }

  selectAll() {
    this.set({ ...this.state, nodes: this.state.nodes.map((n) => ({ ...n, selected: true })) }, false);
  }

  /** After a run is queued: apply each seed widget's control (randomize / increment). */
  applySeedControls() {
    let changed = false;
    const nodes = this.state.nodes.map((n) => {
      if (n.type !== "nf") return n;
      const data = n.data;
      const def = catalog.nodes[data.type];
      if (!def) return n;
      let values = data.values;
      for (const [name, mode] of Object.entries(data.seedControl)) {
        if (data.converted.includes(name) || mode === "fixed") continue;
        const schema = def.inputs[name]?.schema ?? {};
        const max = Math.min(typeof schema.maximum === "number" ? schema.maximum : 2 ** 53 - 1, 2 ** 53 - 1);
        const min = typeof schema.minimum === "number" ? schema.minimum : 0;
        const current = Number(values[name] ?? 0);
        let next: number;
        if (mode === "increment") next = current + 1 > max ? min : current + 1;
        else next = min + Math.floor(Math.random() * Math.min(max - min + 1, 2 ** 48));
        values = { ...values, [name]: next };
        changed = true;
      }
      return values === data.values ? n : { ...n, data: { ...data, values } };
    });
    if (changed) this.set({ ...this.state, nodes });
  }

  // --- clipboard -------------------------------------------------------------------------

  copy(): number {
    const nodes = this.state.nodes.filter((n) => n.selected);
    if (!nodes.length) return 0;
    const ids = new Set(nodes.map((n) => n.id));
    const edges = this.state.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
    this.clipboard = structuredClone({ nodes, edges });
    try {
      localStorage.setItem("nodeflow.clipboard", JSON.stringify(this.clipboard));
    } catch {
      /* ignore */
    }
    return nodes.length;
  }

  paste(at?: XYPosition): string[] {
    let clip = this.clipboard;
    if (!clip) {
      try {
        const raw = localStorage.getItem("nodeflow.clipboard");
        clip = raw ? (JSON.parse(raw) as GraphState) : null;
      } catch {
        clip = null;
      }
    }
    if (!clip || !clip.nodes.length) return [];
    this.checkpoint();
    const minX = Math.min(...clip.nodes.map((n) => n.position.x));
    const minY = Math.min(...clip.nodes.map((n) => n.position.y));
    const offset = at ? { x: at.x - minX, y: at.y - minY } : { x: 40, y: 40 };
    const taken = new Set(this.state.nodes.map((n) => n.id));
    const rename = new Map<string, string>();
    const newNodes: AnyNode[] = clip.nodes.map((n) => {
      const base = n.type === "nf" ? slug((n.data as NfData).type) : n.type === "note" ? "note" : "group";
      const id = this.uniqueId(base, taken);
      taken.add(id);
      rename.set(n.id, id);
      const copy = structuredClone(n) as AnyNode;
      return {
        ...copy,
        id,
        selected: true,
        dragging: false,
        position: { x: n.position.x + offset.x, y: n.position.y + offset.y },
      } as AnyNode;
    });
    const newEdges = clip.edges.map((e) =>
      makeEdge(rename.get(e.source)!, e.sourceHandle!, rename.get(e.target)!, e.targetHandle!, (e.data as { type?: string })?.type),
    );
    const nodes = this.state.nodes.map((n) => (n.selected ? { ...n, selected: false } : n));
    const groups = newNodes.filter((n) => n.type === "group");
    const others = newNodes.filter((n) => n.type !== "group");
    this.set({ ...this.state, nodes: [...groups, ...nodes, ...others], edges: [...this.state.edges, ...newEdges] });
    return newNodes.map((n) => n.id);
  }

  // --- workflow JSON ---------------------------------------------------------------------

  toWorkflow(): WorkflowJson {
    const nodesJson: WorkflowJson["nodes"] = {};
    const uiNodes: Record<string, unknown> = {};
    const notes: unknown[] = [];
    const groups: unknown[] = [];
    const incoming = new Map<string, Edge[]>();
    for (const e of this.state.edges) {
      const list = incoming.get(e.target) ?? [];
      list.push(e);
      incoming.set(e.target, list);
    }
    const pos = (n: AnyNode) => [Math.round(n.position.x), Math.round(n.position.y)];
    for (const n of this.state.nodes) {
      if (n.type === "note") {
        notes.push({ id: n.id, pos: pos(n), size: size(n), text: n.data.text });
        continue;
      }
      if (n.type === "group") {
        const g: Record<string, unknown> = { id: n.id, pos: pos(n), size: size(n), title: n.data.title };
        if (n.data.color) g.color = n.data.color;
        groups.push(g);
        continue;
      }
      const data = n.data as NfData;
      const def = catalog.nodes[data.type];
      const inputs: Record<string, unknown> = { ...data.extra };
      if (def) {
        for (const [name, input] of Object.entries(def.inputs)) {
          // a converted widget keeps its value until a link (written below) replaces it
          if (input.kind !== "widget") continue;
          const v = data.values[name];
          if (v === undefined) continue;
          const hasDefault = input.default !== undefined || input.schema?.default !== undefined;
          if (!hasDefault) {
            if (v === "" && input.required) continue;
          } else if (!data.present?.includes(name) && sameValue(v, defaultValue(input))) {
            continue; // a default the user never touched: the server fills it in
          }
          inputs[name] = v;
        }
      }
      for (const e of incoming.get(n.id) ?? []) {
        inputs[e.targetHandle!] = { from: `${e.source}.${e.sourceHandle}` };
      }
      nodesJson[n.id] = data.mode ? { type: data.type, inputs, mode: data.mode } : { type: data.type, inputs };
      const ui: Record<string, unknown> = { ...(data.uiExtra ?? {}), pos: pos(n) };
      if (data.converted.length) ui.converted = [...data.converted];
      if (Object.keys(data.seedControl).length) ui.seed_control = { ...data.seedControl };
      if (data.title) ui.title = data.title;
      if (data.collapsed) ui.collapsed = true;
      uiNodes[n.id] = ui;
    }
    const ui: Record<string, unknown> = { ...this.uiExtra, nodes: uiNodes };
    const reroutes: Record<string, number[][]> = {};
    for (const e of this.state.edges) {
      const points = e.data?.points as XYPosition[] | undefined;
      if (points?.length) reroutes[`${e.target}.${e.targetHandle}`] = points.map((p) => [Math.round(p.x), Math.round(p.y)]);
    }
    if (Object.keys(reroutes).length) ui.reroutes = reroutes;
    else delete ui.reroutes;
    if (notes.length) ui.notes = notes;
    else delete ui.notes;
    if (groups.length) ui.groups = groups;
    else delete ui.groups;
    const workflow: WorkflowJson = { ...this.workflowExtra, version: 1, nodes: nodesJson, ui };
    if (this.state.subgraphs && Object.keys(this.state.subgraphs).length) {
      workflow.subgraphs = structuredClone(this.state.subgraphs);
    }
    const types = Object.values(nodesJson).map((n) => (n as { type: string }).type);
    const requires = requirements(types, this.workflowExtra.requires as Record<string, unknown>);
    if (Object.keys(requires).length) workflow.requires = requires;
    else delete workflow.requires;
    return workflow;
  }

  /** Replace the graph with a workflow. Throws on something that is not a workflow. */
  loadWorkflow(json: unknown, options: { undoable?: boolean; markSaved?: boolean } = {}) {
    let read: ReturnType<typeof fromWorkflow>;
    try {
      read = fromWorkflow(json);
    } catch (err) {
      registerSubgraphs(this.state.subgraphs); // the canvas keeps its own node types
      throw err;
    }
    const { state, workflowExtra, uiExtra } = read;
    if (options.undoable !== false) this.checkpoint();
    this.workflowExtra = workflowExtra;
    this.uiExtra = uiExtra;
    this.set(state);
    if (options.markSaved !== false) this.markSaved();
  }

  /** The whole workflow: the canvas's, or, while a subgraph is open, the one it belongs to. */
  toTopWorkflow(): WorkflowJson {
    const inner = this.toWorkflow();
    return this.outer ? this.outer(inner) : inner;
  }

  /** Undo and redo of the canvas, taken away (a subgraph opens) and put back (it closes). */
  takeHistory(): { past: GraphState[]; future: GraphState[] } {
    const history = { past: this.past, future: this.future };
    this.past = [];
    this.future = [];
    this.lastKey = null;
    return history;
  }

  putHistory(history: { past: GraphState[]; future: GraphState[] }) {
    this.past = history.past;
    this.future = history.future;
    this.lastKey = null;
  }

  clear() {
    this.checkpoint();
    this.workflowExtra = {};
    this.uiExtra = {};
    this.set({ nodes: [], edges: [], subgraphs: undefined });
    this.markSaved();
  }

  /** The fingerprint of the workflow as last kept (a tab keeps it while another is shown). */
  get savedMark(): string {
    return this.saved;
  }
  set savedMark(mark: string) {
    this.saved = mark;
  }

  /** The canvas as it is now is kept somewhere (a file, an example): nothing to lose. */
  markSaved() {
    this.saved = fingerprint(this.toTopWorkflow());
  }

  /** Whether replacing the canvas would lose work: it has nodes and changed since it was last
   * loaded, saved to a file or cleared (kept across reloads). */
  hasUnsavedChanges(): boolean {
    return this.state.nodes.length > 0 && fingerprint(this.toTopWorkflow()) !== this.saved;
  }

  persist() {
    try {
      localStorage.setItem(SAVED_KEY, this.saved);
      localStorage.setItem(STORAGE_KEY, JSON.stringify(this.toTopWorkflow()));
    } catch {
      /* storage full or unavailable: the graph stays on the canvas */
    }
  }

  restore(): boolean {
    try {
      const raw = localStorage.getItem(STORAGE_KEY);
      if (!raw) return false;
      this.loadWorkflow(JSON.parse(raw), { undoable: false });
      this.saved = localStorage.getItem(SAVED_KEY) ?? ""; // unknown: unsaved
      return true;
    } catch {
      return false;
    }
  }
}

function size(n: AnyNode): [number, number] {
  return [
    Math.round(n.width ?? n.measured?.width ?? 240),
    Math.round(n.height ?? n.measured?.height ?? 120),
  ];
}

/** A short fingerprint of a workflow (53-bit cyrb53 hash of its JSON). */
export function fingerprint(workflow: WorkflowJson): string {
  const text = JSON.stringify(workflow);
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function readPos(v: unknown): XYPosition | null {
  if (Array.isArray(v) && v.length >= 2 && typeof v[0] === "number" && typeof v[1] === "number") {
    return { x: v[0], y: v[1] };
  }
  return null;
}

function readSize(v: unknown, fallback: [number, number]): [number, number] {
  if (Array.isArray(v) && typeof v[0] === "number" && typeof v[1] === "number") return [v[0], v[1]];
  return fallback;
}

export function fromWorkflow(json: unknown): {
  state: GraphState;
  workflowExtra: Record<string, unknown>;
  uiExtra: Record<string, unknown>;
} {
  if (!isObject(json) || !isObject(json.nodes)) {
    throw new Error('not a nodeflow workflow (expected {"version": 1, "nodes": {...}})');
  }
  if (json.version !== undefined && json.version !== 1) {
    throw new Error(`unsupported workflow version ${String(json.version)}`);
  }
  const { version: _v, nodes: rawNodes, ui: rawUi, subgraphs: rawSubgraphs, ...workflowExtra } = json;
  void _v;
  // definitions first: the nodes of this workflow may be their instances
  const subgraphs = isObject(rawSubgraphs) ? (structuredClone(rawSubgraphs) as SubgraphDefs) : undefined;
  registerSubgraphs(subgraphs);
  const ui = isObject(rawUi) ? rawUi : {};
  const { nodes: uiNodesRaw, notes: rawNotes, groups: rawGroups, reroutes: rawReroutes, ...uiExtra } = ui;
  const reroutes = isObject(rawReroutes) ? rawReroutes : {};
  const uiNodes = isObject(uiNodesRaw) ? uiNodesRaw : {};

  const entries = Object.entries(rawNodes as Record<string, unknown>);
  // which outputs of unknown-type nodes are used, so they can get sockets
  const usedOutputs = new Map<string, Set<string>>();
  for (const [, raw] of entries) {
    if (!isObject(raw) || !isObject(raw.inputs)) continue;
    for (const v of Object.values(raw.inputs)) {
      if (!isLink(v)) continue;
      const ref = splitRef(v.from);
      if (!ref) continue;
      const set = usedOutputs.get(ref[0]) ?? new Set();
      set.add(ref[1]);
      usedOutputs.set(ref[0], set);
    }
  }

  const nodes: AnyNode[] = [];
  const pending: { target: string; input: string; ref: string }[] = [];
  for (const [id, raw] of entries) {
    if (!isObject(raw)) throw new Error(`node ${id}: not an object`);
    const type = String(raw.type ?? "");
    const inputs = isObject(raw.inputs) ? raw.inputs : {};
    const def = catalog.nodes[type];
    const nodeUi = isObject(uiNodes[id]) ? (uiNodes[id] as Record<string, unknown>) : {};
    const { pos: rawPos, converted: rawConverted, seed_control: rawSeed, title, collapsed, ...uiRest } = nodeUi;
    const position = readPos(rawPos);
    const node = def
      ? makeNfNode(type, position ?? { x: 0, y: 0 }, id)
      : ({
          id,
          type: "nf",
          position: position ?? { x: 0, y: 0 },
          data: {
            type,
            values: {},
            converted: [],
            seedControl: {},
            extra: {},
            unknown: { inputs: [], outputs: [...(usedOutputs.get(id) ?? [])] },
          },
        } as NfNode);
    if (!position) (node as AnyNode & { _autoPos?: boolean })._autoPos = true;
    if (type.startsWith("@")) node.deletable = false; // an open subgraph's inputs and outputs
    const data = node.data;
    if (typeof title === "string") data.title = title;
    if (NODE_MODES.includes(raw.mode as NodeMode)) data.mode = raw.mode as NodeMode;
    if (collapsed === true) data.collapsed = true;
    if (Object.keys(uiRest).length) data.uiExtra = uiRest;
    if (Array.isArray(rawConverted) && def) {
      data.converted = rawConverted.filter(
        (c): c is string => typeof c === "string" && !!def.inputs[c] && convertible(def.inputs[c]),
      );
    }
    // seeds of loaded workflows stay as they are unless the workflow says otherwise
    for (const name of Object.keys(data.seedControl)) data.seedControl[name] = "fixed";
    if (isObject(rawSeed)) {
      for (const [name, mode] of Object.entries(rawSeed)) {
        if (name in data.seedControl && SEED_MODES.includes(mode as SeedMode)) {
          data.seedControl[name] = mode as SeedMode;
        }
      }
    }
    for (const [name, value] of Object.entries(inputs)) {
      const input = def?.inputs[name];
      if (isLink(value)) {
        if (!def) data.unknown!.inputs.push(name);
        if (def && !input) {
          data.extra[name] = value;
          continue;
        }
        if (input && input.kind === "widget") {
          if (!convertible(input)) {
            data.extra[name] = value;
            continue;
          }
          if (!data.converted.includes(name)) data.converted.push(name);
        }
        pending.push({ target: id, input: name, ref: value.from });
      } else if (input && input.kind === "widget") {
        data.values[name] = value;
        (data.present ??= []).push(name);
      } else {
        data.extra[name] = value;
      }
    }
    nodes.push(node);
  }

  const byId = new Map(nodes.map((n) => [n.id, n]));
  const edges: Edge[] = [];
  for (const p of pending) {
    const ref = splitRef(p.ref);
    const source = ref ? byId.get(ref[0]) : undefined;
    const type = ref && source ? outputType(source, ref[1]) : undefined;
    if (!ref || !source || type === undefined) {
      // a link the canvas cannot draw: keep it verbatim so nothing is lost
      (byId.get(p.target)!.data as NfData).extra[p.input] = { from: p.ref };
      continue;
    }
    const edge = makeEdge(ref[0], ref[1], p.target, p.input, type);
    const points = readPoints(reroutes[`${p.target}.${p.input}`]);
    if (points.length) edge.data = { ...edge.data, points };
    edges.push(edge);
  }

  autoLayout(nodes, edges);

  const decorations: AnyNode[] = [];
  if (Array.isArray(rawGroups)) {
    for (const [i, g] of rawGroups.entries()) {
      if (!isObject(g)) continue;
      const [w, h] = readSize(g.size, [520, 360]);
      decorations.push({
        id: typeof g.id === "string" && !byId.has(g.id) ? g.id : `group_${i + 1}`,
        type: "group",
        position: readPos(g.pos) ?? { x: 0, y: 0 },
        data: { title: typeof g.title === "string" ? g.title : "Group", ...(typeof g.color === "string" ? { color: g.color } : {}) },
        width: w,
        height: h,
        zIndex: -1,
      } as GroupNode);
    }
  }
  const notes: AnyNode[] = [];
  if (Array.isArray(rawNotes)) {
    for (const [i, note] of rawNotes.entries()) {
      if (!isObject(note)) continue;
      const [w, h] = readSize(note.size, [240, 120]);
      notes.push({
        id: typeof note.id === "string" && !byId.has(note.id) ? note.id : `note_${i + 1}`,
        type: "note",
        position: readPos(note.pos) ?? { x: 0, y: 0 },
        data: { text: typeof note.text === "string" ? note.text : "" },
        width: w,
        height: h,
      } as NoteNode);
    }
  }
  return {
    state: { nodes: [...decorations, ...nodes, ...notes], edges, subgraphs },
    workflowExtra,
    uiExtra,
  };
}

type Box = { x: number; y: number; w: number; h: number };
const NODE_W = 240;
const GAP = 40;

/** About how tall a node is drawn (before it is measured): title, sockets, widgets. */
function estimateHeight(n: AnyNode): number {
  if (n.type !== "nf") return 120;
  const data = n.data as NfData;
  const def = catalog.nodes[data.type];
  if (!def) return 80;
  const inputs = Object.values(def.inputs);
  const sockets = Math.max(inputs.filter((i) => i.kind === "socket").length, def.outputs.length);
  const widgets = inputs.filter((i) => i.kind === "widget").length;
  return 40 + sockets * 18 + widgets * 46;
}

function overlaps(a: Box, b: Box): boolean {
  return a.x < b.x + b.w + GAP && b.x < a.x + a.w + GAP && a.y < b.y + b.h + GAP && b.y < a.y + a.h + GAP;
}

/** Nodes that came without a position. In a graph where none has one: columns by link depth.
 * Where others have one (a ComfyUI node split in several here, a hand-written addition): left of
 * the placed node it feeds (else right of the one feeding it), moved down past the nodes there. */
function autoLayout(nodes: AnyNode[], edges: Edge[]) {
  const auto = (n: AnyNode) => (n as AnyNode & { _autoPos?: boolean })._autoPos;
  const missing = nodes.filter(auto);
  if (!missing.length) return;
  const done = (n: AnyNode) => delete (n as AnyNode & { _autoPos?: boolean })._autoPos;
  const placed = nodes.filter((n) => !auto(n));
  const boxes: Box[] = placed.map((n) => ({ ...n.position, w: NODE_W, h: estimateHeight(n) }));
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const leftover: AnyNode[] = [];
  if (placed.length) {
    // those next to a placed node first; a node linked only to other missing ones follows them
    for (let round = 0, queue = missing; queue.length && round < missing.length; round++) {
      const next: AnyNode[] = [];
      for (const n of queue) {
        const isPlaced = (id: string) => !!byId.get(id) && !auto(byId.get(id)!);
        const feeds = edges.find((e) => e.source === n.id && isPlaced(e.target));
        const fedBy = feeds ? undefined : edges.find((e) => e.target === n.id && isPlaced(e.source));
        if (!feeds && !fedBy) {
          next.push(n);
          continue;
        }
        const anchor = byId.get(feeds ? feeds.target : fedBy!.source)!;
        const box = {
          x: anchor.position.x + (feeds ? -(NODE_W + 2 * GAP) : NODE_W + 2 * GAP),
          y: anchor.position.y,
          w: NODE_W,
          h: estimateHeight(n),
        };
        while (boxes.some((b) => overlaps(box, b))) box.y += GAP;
        boxes.push(box);
        n.position = { x: box.x, y: box.y };
        done(n);
      }
      if (next.length === queue.length) break;
      queue = next;
    }
    leftover.push(...missing.filter(auto));
    if (!leftover.length) return;
  }
  const rest = placed.length ? leftover : missing;
  // below everything placed, in columns by link depth
  const top = boxes.length ? Math.max(...boxes.map((b) => b.y + b.h)) + 2 * GAP : 0;
  const left = boxes.length ? Math.min(...boxes.map((b) => b.x)) : 0;
  const preds = new Map<string, string[]>();
  for (const e of edges) preds.set(e.target, [...(preds.get(e.target) ?? []), e.source]);
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    if (depth.has(id)) return depth.get(id)!;
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const d = Math.max(-1, ...(preds.get(id) ?? []).map(depthOf)) + 1;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const rows = new Map<number, number>();
  for (const n of rest) {
    const d = depthOf(n.id);
    const row = rows.get(d) ?? 0;
    rows.set(d, row + 1);
    n.position = { x: left + d * 340, y: top + row * 260 };
    done(n);
  }
}

export const graph = new GraphStore();
