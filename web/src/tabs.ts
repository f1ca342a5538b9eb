// Workflow tabs: several workflows open at once, one on the canvas. The canvas's workflow is
// kept as before (`nodeflow.workflow`); the others, with the tab list, in `nodeflow.tabs`, so
// every tab survives a reload. Undo history stays with its tab while this page lives.
import type { WorkflowJson } from "./api";
import { ask } from "./components/Confirm";
import { fingerprint, graph } from "./graph";
import { runState } from "./runstate";
import { leaveAll } from "./subgraphs";

export interface Tab {
  id: string;
  name: string;
  /** An inactive tab's workflow and its saved mark (the canvas holds the active one's). */
  workflow?: WorkflowJson;
  saved?: string;
}

const TABS_KEY = "nodeflow.tabs";
const ACTIVE_KEY = "nodeflow.tab";
const EMPTY: WorkflowJson = { version: 1, nodes: {} };

let tabs: Tab[] = [];
let active = "";
let snapshot: { tabs: Tab[]; active: string } = { tabs, active };
const histories = new Map<string, ReturnType<typeof graph.takeHistory>>();
const listeners = new Set<() => void>();
let fit: () => void = () => {};

export function subscribeTabs(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function tabsSnapshot() {
  return snapshot;
}

function changed() {
  snapshot = { tabs: [...tabs], active };
  try {
    localStorage.setItem(TABS_KEY, JSON.stringify(tabs));
    localStorage.setItem(ACTIVE_KEY, active);
  } catch {
    /* storage full: the tabs stay for this page */
  }
  for (const l of listeners) l();
}

function newId(): string {
  const taken = new Set(tabs.map((t) => t.id));
  for (let i = 1; ; i++) if (!taken.has(`t${i}`)) return `t${i}`;
}

function nextName(): string {
  const taken = new Set(tabs.map((t) => t.name));
  for (let i = 1; ; i++) if (!taken.has(`Workflow ${i}`)) return `Workflow ${i}`;
}

/** Read the tabs kept in this browser (after the canvas itself was restored). */
export function initTabs(fitView: () => void) {
  fit = fitView;
  try {
    const raw = JSON.parse(localStorage.getItem(TABS_KEY) ?? "null") as unknown;
    if (Array.isArray(raw)) {
      tabs = raw.filter(
        (t): t is Tab => !!t && typeof t === "object" && typeof t.id === "string" && typeof t.name === "string",
      );
    }
  } catch {
    tabs = [];
  }
  if (!tabs.length) tabs = [{ id: "t1", name: "Workflow 1" }];
  const kept = localStorage.getItem(ACTIVE_KEY);
  active = tabs.some((t) => t.id === kept) ? kept! : tabs[0].id;
  for (const t of tabs) if (t.id === active) delete t.workflow; // the canvas has it
  changed();
}

/** Put tab `id`'s workflow on the canvas, keeping the current one in its tab. */
export function switchTab(id: string) {
  const target = tabs.find((t) => t.id === id);
  if (!target || id === active) return;
  const current = tabs.find((t) => t.id === active);
  if (current) {
    current.workflow = graph.toTopWorkflow();
    current.saved = graph.savedMark;
    histories.set(current.id, graph.takeHistory());
  }
  leaveAll();
  graph.loadWorkflow(target.workflow ?? EMPTY, { undoable: false });
  if (target.saved !== undefined) graph.savedMark = target.saved;
  graph.putHistory(histories.get(id) ?? { past: [], future: [] });
  delete target.workflow;
  delete target.saved;
  active = id;
  runState.resetNodes();
  runState.setBanner(null);
  graph.persist();
  changed();
  fit();
}

/** A new tab with an empty canvas, made the active one. */
export function newTab(workflow: WorkflowJson = EMPTY): string {
  const id = newId();
  tabs.push({ id, name: nextName(), workflow: structuredClone(workflow) });
  switchTab(id);
  return id;
}

function unsaved(tab: Tab): boolean {
  if (tab.id === active) return graph.hasUnsavedChanges();
  const workflow = tab.workflow ?? EMPTY;
  return Object.keys(workflow.nodes).length > 0 && fingerprint(workflow) !== tab.saved;
}

/** Close a tab (asking first when its workflow has unsaved changes); the last one is cleared
 * instead of closed, so there is always a canvas. */
export async function closeTab(id: string): Promise<boolean> {
  const tab = tabs.find((t) => t.id === id);
  if (!tab) return false;
  if (unsaved(tab) && !(await ask(`Close ${tab.name}? Its workflow has unsaved changes.`, "Close it"))) {
    return false;
  }
  if (tabs.length === 1) {
    leaveAll();
    graph.clear();
    runState.resetNodes();
    return true;
  }
  if (id === active) {
    const index = tabs.indexOf(tab);
    switchTab(tabs[index + 1]?.id ?? tabs[index - 1].id);
  }
  tabs = tabs.filter((t) => t.id !== id);
  histories.delete(id);
  changed();
  return true;
}

export function renameTab(id: string, name: string) {
  const tab = tabs.find((t) => t.id === id);
  if (!tab || !name.trim()) return;
  tab.name = name.trim();
  changed();
}
