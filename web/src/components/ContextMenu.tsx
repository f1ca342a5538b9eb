// The canvas's right-click menu (node or pane), and bypass/mute of the selection.
import type { XYPosition } from "@xyflow/react";
import { catalog, convertible } from "../catalog";
import { graph, type NodeMode } from "../graph";
import { convertSelection, exposeInput, exposeOutput, openPath, openSubgraph, saveInstanceToLibrary } from "../subgraphs";
import { alignSelected, distributeSelected } from "../layout";
import { fitView } from "../actions";

export type Menu =
  | { kind: "node"; x: number; y: number; nodeId: string }
  | { kind: "pane"; x: number; y: number; flow: XYPosition };

export interface SearchState {
  x: number;
  y: number;
  flow: XYPosition;
  /** Dropped from a socket: connect the new node to it. */
  from?: { nodeId: string; handle: string; handleType: "source" | "target"; type: string };
}

/** Ctrl+B / Ctrl+M: toggle the mode of the selected nodes. */
export function toggleSelectedMode(mode: NodeMode) {
  graph.toggleMode(graph.state.nodes.filter((n) => n.selected).map((n) => n.id), mode);
}

/** From the menu: the node right-clicked, with the rest of the selection if it is part of it. */
function toggleMode(nodeId: string, mode: NodeMode) {
  const selected = graph.state.nodes.filter((n) => n.selected).map((n) => n.id);
  graph.toggleMode(selected.includes(nodeId) ? selected : [nodeId], mode);
}

function selectOnly(id: string) {
  graph.applyNodeChanges(graph.state.nodes.map((n) => ({ type: "select" as const, id: n.id, selected: n.id === id })));
}

export function ContextMenu({
  menu,
  onClose,
  openSearch,
  paste,
}: {
  menu: Menu;
  onClose: () => void;
  openSearch: (s: SearchState) => void;
  paste: () => void;
}) {
  const items: { label: string; testid?: string; action: () => void }[] = [];
  if (menu.kind === "node") {
    const node = graph.node(menu.nodeId);
    if (node?.type === "nf") {
      const data = node.data;
      const def = catalog.nodes[data.type];
      for (const [name, input] of Object.entries(def?.inputs ?? {})) {
        if (!convertible(input)) continue;
        const converted = data.converted.includes(name);
        items.push({
          label: converted ? `Convert ${name} to widget` : `Convert ${name} to input`,
          testid: `menu-convert-${name}`,
          action: () => graph.toggleConvert(node.id, name),
        });
      }
      items.push({
        label: "Rename…",
        action: () => {
          const title = window.prompt("Title", data.title || def?.display_name || data.type);
          if (title !== null) graph.updateData(node.id, { title: title.trim() || undefined });
        },
      });
    }
    const mode = node?.type === "nf" ? node.data.mode : undefined;
    if (node?.type === "nf") {
      const collapsed = !!node.data.collapsed;
      items.push({
        label: collapsed ? "Expand" : "Collapse",
        testid: "menu-collapse",
        action: () => graph.updateData(node.id, { collapsed: collapsed ? undefined : true }),
      });
    }
    items.push({
      label: mode === "bypass" ? "Stop bypassing (Ctrl+B)" : "Bypass (Ctrl+B)",
      testid: "menu-bypass",
      action: () => toggleMode(menu.nodeId, "bypass"),
    });
    items.push({
      label: mode === "mute" ? "Unmute (Ctrl+M)" : "Mute (Ctrl+M)",
      testid: "menu-mute",
      action: () => toggleMode(menu.nodeId, "mute"),
    });
    items.push({
      label: "Duplicate",
      testid: "menu-duplicate",
      action: () => {
        const sel = graph.state.nodes.filter((n) => n.selected).map((n) => n.id);
        if (!sel.includes(menu.nodeId)) selectOnly(menu.nodeId);
        graph.copy();
        graph.paste();
      },
    });
    items.push({ label: "Group selected nodes", action: () => graph.groupSelection() });
    const selectedCount = graph.state.nodes.filter((n) => n.selected && n.type !== "group").length;
    if (selectedCount >= 2) {
      const aligns = [["left", "Align left edges", "Alt+Shift+←"], ["right", "Align right edges", "Alt+Shift+→"],
        ["top", "Align top edges", "Alt+Shift+↑"], ["bottom", "Align bottom edges", "Alt+Shift+↓"],
        ["center", "Align centres vertically", ""], ["middle", "Align middles horizontally", ""]] as const;
      for (const [how, label, keys] of aligns) {
        items.push({ label: keys ? `${label} (${keys})` : label, testid: `menu-align-${how}`, action: () => alignSelected(how) });
      }
    }
    if (selectedCount >= 3) {
      items.push({ label: "Distribute horizontally (Alt+Shift+H)", testid: "menu-distribute-horizontal", action: () => distributeSelected("horizontal") });
      items.push({ label: "Distribute vertically (Alt+Shift+V)", testid: "menu-distribute-vertical", action: () => distributeSelected("vertical") });
    }
    if (node?.type === "nf" && graph.state.subgraphs?.[node.data.type]) {
      items.push({
        label: "Open subgraph",
        testid: "menu-open-subgraph",
        action: () => {
          if (openSubgraph(node.id)) fitView();
        },
      });
      items.push({
        label: "Save subgraph to library",
        testid: "menu-library-subgraph",
        action: () => saveInstanceToLibrary(node.id),
      });
    }
    if (node?.type === "nf" && openPath().length && !node.data.type.startsWith("@")) {
      const spec = catalog.nodes[node.data.type];
      const linked = new Set(graph.state.edges.filter((e) => e.target === node.id).map((e) => e.targetHandle));
      for (const [name, input] of Object.entries(spec?.inputs ?? {})) {
        if (linked.has(name) || (input.kind === "widget" && !convertible(input))) continue;
        items.push({ label: `Expose ${name} as a subgraph input`, testid: `menu-expose-input-${name}`, action: () => exposeInput(node.id, name) });
      }
      for (const output of spec?.outputs ?? []) {
        items.push({ label: `Expose ${output.name} as a subgraph output`, testid: `menu-expose-output-${output.name}`, action: () => exposeOutput(node.id, output.name) });
      }
    }
    items.push({
      label: "Convert to subgraph",
      testid: "menu-convert-subgraph",
      action: () => {
        const sel = graph.state.nodes.filter((n) => n.selected).map((n) => n.id);
        if (!sel.includes(menu.nodeId)) selectOnly(menu.nodeId);
        convertSelection();
      },
    });
    items.push({ label: "Delete", testid: "menu-delete", action: () => graph.removeNodes([menu.nodeId]) });
  } else {
    items.push({ label: "Add node…", testid: "menu-add-node", action: () => openSearch({ x: menu.x, y: menu.y, flow: menu.flow }) });
    items.push({ label: "Add note", testid: "menu-add-note", action: () => graph.addNote(menu.flow) });
    items.push({ label: "Add group", testid: "menu-add-group", action: () => graph.addGroup(menu.flow) });
    items.push({ label: "Group selected nodes", action: () => graph.groupSelection() });
    items.push({ label: "Paste", action: paste });
  }
  const left = Math.min(menu.x, window.innerWidth - 240);
  const top = Math.max(8, Math.min(menu.y, window.innerHeight - items.length * 30 - 20));
  return (
    <>
      <div className="nf-menu-backdrop" onMouseDown={onClose} onContextMenu={(e) => { e.preventDefault(); onClose(); }} />
      <div className="nf-context-menu" data-testid="context-menu" style={{ left, top }}>
        {items.map((item) => (
          <div
            key={item.label}
            className="nf-menu-item"
            data-testid={item.testid}
            onClick={() => {
              onClose();
              item.action();
            }}
          >
            {item.label}
          </div>
        ))}
      </div>
    </>
  );
}
