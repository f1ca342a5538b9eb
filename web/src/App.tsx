// The editor: toolbar, palette, canvas (React Flow), queue/gallery panel, overlays.
import {
  Background,
  BackgroundVariant,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useStore,
  type Connection,
  type Edge,
  type EdgeTypes,
  type FinalConnectionState,
  type NodeTypes,
  type XYPosition,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { clearCanvas, fitView, loadDefaultGraph, loadWorkflow, queueWorkflow, setFitRequest } from "./actions";
import { api, type NodeDef, type WorkflowJson } from "./api";
import {
  catalog,
  compatible,
  type PluginDef,
  setCatalog,
  setPlugins,
  typeColor,
} from "./catalog";
import { graph, inputType, outputType, type AnyNode, type NfData } from "./graph";
import { openFile as openFileIn, openPicture, openRun } from "./openfile";
import { runState, useRunState } from "./runstate";
import { compactSelector, FlowNode, GroupNodeView, NoteNodeView } from "./components/FlowNode";
import { Gallery, HelpPanel, Lightbox, NodeSearch, Notices, Palette, QueuePanel } from "./components/Panels";
import { ConfirmDialog } from "./components/Confirm";
import { RerouteEdge } from "./components/RerouteEdge";
import { ContextMenu, type Menu, type SearchState, toggleSelectedMode } from "./components/ContextMenu";
import { Toolbar, type Example } from "./components/Toolbar";
import { extensionStatus, loadExtensions } from "./extensions";
import { SubgraphBar } from "./components/SubgraphBar";
import { layoutShortcut } from "./layout";
import { Tabs } from "./components/Tabs";
import { initTabs, newTab, switchTab } from "./tabs";
import { closeSubgraph, convertSelection, openPath, openSubgraph } from "./subgraphs";

const nodeTypes: NodeTypes = { nf: FlowNode, note: NoteNodeView, group: GroupNodeView };
const edgeTypes: EdgeTypes = { default: RerouteEdge };

function isEditable(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el || !el.tagName) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 1000);
}


function Editor() {
  const { nodes, edges } = useSyncExternalStore(graph.subscribe, graph.getSnapshot);
  const rf = useReactFlow();
  const [search, setSearch] = useState<SearchState | null>(null);
  const [menu, setMenu] = useState<Menu | null>(null);
  const [help, setHelp] = useState(false);
  const [examples, setExamples] = useState<Example[] | null>(null);
  const [lightbox, setLightbox] = useState<string | null>(null);
  const [showPalette, setShowPalette] = useState(() => localStorage.getItem("nodeflow.palette") === "1");
  const [showSide, setShowSide] = useState(() => localStorage.getItem("nodeflow.side") !== "0");
  useEffect(() => localStorage.setItem("nodeflow.palette", showPalette ? "1" : "0"), [showPalette]);
  useEffect(() => localStorage.setItem("nodeflow.side", showSide ? "1" : "0"), [showSide]);
  const mouse = useRef<{ x: number; y: number } | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const reconnected = useRef(true);
  const groupDrag = useRef<Map<string, { start: XYPosition; children: Map<string, XYPosition> }>>(new Map());
  useRunState();

  const fit = useCallback(() => {
    window.requestAnimationFrame(() =>
      window.setTimeout(() => void rf.fitView({ padding: 0.12, duration: 0, maxZoom: 1.2 }), 30),
    );
  }, [rf]);
  useEffect(() => {
    setFitRequest(fit);
    if (graph.state.nodes.length) fit();
    return () => setFitRequest(null);
  }, [fit]);

  const center = useCallback((): XYPosition => {
    const el = document.querySelector('[data-testid="canvas"]')?.getBoundingClientRect();
    const p = el ? { x: el.left + el.width / 2 - 120, y: el.top + el.height / 2 - 80 } : { x: 400, y: 300 };
    return rf.screenToFlowPosition(p);
  }, [rf]);

  const addAtCenter = useCallback((type: string) => {
    graph.addNode(type, center());
  }, [center]);

  // --- files -----------------------------------------------------------------------------

  const openFile = useCallback((file: File, at?: XYPosition) => openFileIn(file, () => at ?? center()), [center]);

  useEffect(() => {
    const over = (e: DragEvent) => {
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
    };
    const drop = (e: DragEvent) => {
      e.preventDefault();
      const at = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
      const type = e.dataTransfer?.getData("application/x-nodeflow-type");
      if (type) {
        graph.addNode(type, at);
        return;
      }
      const files = [...(e.dataTransfer?.files ?? [])];
      files.forEach((f, i) => void openFile(f, { x: at.x + i * 30, y: at.y + i * 30 }));
    };
    window.addEventListener("dragover", over);
    window.addEventListener("drop", drop);
    return () => {
      window.removeEventListener("dragover", over);
      window.removeEventListener("drop", drop);
    };
  }, [rf, openFile]);

  const save = useCallback(() => {
    download("workflow.json", JSON.stringify(graph.toTopWorkflow(), null, 2));
    graph.markSaved();
  }, []);

  const paste = useCallback(() => {
    const at = mouse.current ? rf.screenToFlowPosition(mouse.current) : undefined;
    graph.paste(at);
  }, [rf]);

  // --- keyboard --------------------------------------------------------------------------

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      if (mod && e.key === "Enter") {
        e.preventDefault();
        void queueWorkflow({ front: e.shiftKey }); // Ctrl+Shift+Enter: to the front, as ComfyUI
        return;
      }
      if (e.key === "Escape") {
        setMenu(null);
        setHelp(false);
        setExamples(null);
        setLightbox(null);
        return;
      }
      if (mod && key === "s") {
        e.preventDefault();
        save();
        return;
      }
      if (isEditable(e.target)) return;
      if (layoutShortcut(e)) {
        e.preventDefault();
        return;
      }
      if (mod && key === "z" && !e.shiftKey) {
        e.preventDefault();
        graph.undo();
      } else if (mod && ((key === "z" && e.shiftKey) || key === "y")) {
        e.preventDefault();
        graph.redo();
      } else if (mod && key === "c") {
        graph.copy();
      } else if (mod && key === "v") {
        e.preventDefault();
        paste();
      } else if (mod && key === "a") {
        e.preventDefault();
        graph.selectAll();
      } else if (mod && (key === "b" || key === "m")) {
        e.preventDefault();
        toggleSelectedMode(key === "b" ? "bypass" : "mute");
      } else if (mod && key === "g") {
        e.preventDefault();
        graph.groupSelection();
      } else if (mod && key === "o") {
        e.preventDefault();
        fileInput.current?.click();
      } else if (!mod && !e.altKey && key === "f") {
        fit();
      } else if (!mod && !e.altKey && key === "n") {
        setShowPalette((p) => !p);
      } else if (e.key === "?") {
        setHelp((h) => !h);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [fit, paste, save]);

  // --- canvas events ---------------------------------------------------------------------

  const onDoubleClick = useCallback(
    (e: React.MouseEvent) => {
      const target = e.target as HTMLElement;
      const onPane = target.classList.contains("react-flow__pane") || target.classList.contains("nf-group");
      if (!onPane) return;
      setMenu(null);
      setSearch({ x: e.clientX, y: e.clientY, flow: rf.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
    },
    [rf],
  );

  const onConnectEnd = useCallback(
    (event: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      if (state.isValid || state.toNode || !state.fromNode || !state.fromHandle) return;
      if (!reconnected.current) return; // a link's end dropped on nothing: detached, no search
      const point = "changedTouches" in event ? event.changedTouches[0] : event;
      const from = state.fromHandle;
      const node = graph.node(state.fromNode.id);
      const type = from.type === "source" ? outputType(node, from.id ?? "") : inputType(node, from.id ?? "");
      if (type === undefined) return;
      setSearch({
        x: point.clientX,
        y: point.clientY,
        flow: rf.screenToFlowPosition({ x: point.clientX, y: point.clientY }),
        from: { nodeId: state.fromNode.id, handle: from.id ?? "", handleType: from.type, type },
      });
    },
    [rf],
  );

  const pickFromSearch = useCallback(
    (type: string) => {
      if (!search) return;
      const id = graph.addNode(type, search.flow);
      const from = search.from;
      if (from) {
        const def = catalog.nodes[type];
        if (from.handleType === "source") {
          const target = Object.entries(def.inputs).find(([, i]) => i.kind === "socket" && compatible(from.type, i.type));
          if (target) graph.connect({ source: from.nodeId, sourceHandle: from.handle, target: id, targetHandle: target[0] });
        } else {
          const out = def.outputs.find((o) => compatible(o.type, from.type));
          if (out) graph.connect({ source: id, sourceHandle: out.name, target: from.nodeId, targetHandle: from.handle });
        }
      }
      setSearch(null);
    },
    [search],
  );

  const searchFilter = useMemo(() => {
    const from = search?.from;
    if (!from) return undefined;
    return (def: NodeDef) =>
      from.handleType === "source"
        ? Object.values(def.inputs).some((i) => i.kind === "socket" && compatible(from.type, i.type))
        : def.outputs.some((o) => compatible(o.type, from.type));
  }, [search]);

  const onNodeDragStart = useCallback((_: unknown, _node: AnyNode, dragged: AnyNode[]) => {
    graph.checkpoint();
    groupDrag.current.clear();
    const draggedIds = new Set(dragged.map((n) => n.id));
    for (const g of dragged) {
      if (g.type !== "group") continue;
      const w = g.width ?? g.measured?.width ?? 0;
      const h = g.height ?? g.measured?.height ?? 0;
      const children = new Map<string, XYPosition>();
      for (const n of graph.state.nodes) {
        if (n.type === "group" || draggedIds.has(n.id)) continue;
        const cx = n.position.x + (n.measured?.width ?? 200) / 2;
        const cy = n.position.y + (n.measured?.height ?? 100) / 2;
        if (cx > g.position.x && cx < g.position.x + w && cy > g.position.y && cy < g.position.y + h) {
          children.set(n.id, { ...n.position });
        }
      }
      groupDrag.current.set(g.id, { start: { ...g.position }, children });
    }
  }, []);

  const onNodeDrag = useCallback((_: unknown, _node: AnyNode, dragged: AnyNode[]) => {
    if (!groupDrag.current.size) return;
    const moves = new Map<string, XYPosition>();
    for (const g of dragged) {
      const info = groupDrag.current.get(g.id);
      if (!info) continue;
      const dx = g.position.x - info.start.x;
      const dy = g.position.y - info.start.y;
      for (const [id, p] of info.children) moves.set(id, { x: p.x + dx, y: p.y + dy });
    }
    if (moves.size) graph.moveNodes(moves);
  }, []);

  const onReconnect = useCallback((old: Edge, conn: Connection) => {
    reconnected.current = true;
    if (!graph.isValidConnection(conn)) return;
    graph.removeEdge(old.id);
    graph.connect(conn);
  }, []);

  const onlyVisible = nodes.length > 150;
  // Far zoomed out in a big graph: the canvas gets "nf-low-detail", and styles.css drops what is
  // costly to paint or hit-test in software raster (background dots, handles, edge hit paths,
  // shadows, rounded corners, clipped labels). Changes only when the zoom crosses the threshold.
  const lowDetail = useStore(compactSelector);

  // Panning: capture the pointer on the pane, so the browser does not hit-test every node and
  // edge under the mouse on each move of the drag (the pane gets the events either way).
  const onPointerDownCapture = useCallback((e: React.PointerEvent) => {
    const target = e.target as HTMLElement;
    if (e.button === 0 && e.isPrimary && target.classList?.contains("react-flow__pane")) {
      try {
        target.setPointerCapture(e.pointerId);
      } catch {
        /* not capturable (the pointer is gone): nothing to save */
      }
    }
  }, []);

  return (
    <div className="nf-app">
      <Toolbar
        canUndo={graph.canUndo}
        canRedo={graph.canRedo}
        onFit={fit}
        onSave={save}
        onOpenFile={(f) => void openFile(f)}
        fileInput={fileInput}
        onHelp={() => setHelp(true)}
        examples={examples}
        setExamples={setExamples}
        togglePalette={() => setShowPalette((s) => !s)}
        toggleSide={() => setShowSide((s) => !s)}
      />
      <Tabs />
      <div className="nf-main">
        {showPalette && <Palette onAdd={addAtCenter} />}
        <div
          className={`nf-canvas${lowDetail ? " nf-low-detail" : ""}`}
          data-testid="canvas"
          data-detail={lowDetail ? "low" : "full"}
          onDoubleClick={onDoubleClick}
          onPointerDownCapture={onPointerDownCapture}
          onMouseMove={(e) => (mouse.current = { x: e.clientX, y: e.clientY })}
        >
          <SubgraphBar onBack={fit} />
          <ReactFlow<AnyNode, Edge>
            nodes={nodes}
            edges={edges}
            nodeTypes={nodeTypes}
            edgeTypes={edgeTypes}
            onNodesChange={graph.applyNodeChanges}
            onEdgesChange={graph.applyEdgeChanges}
            onConnect={graph.connect}
            onConnectEnd={onConnectEnd}
            isValidConnection={graph.isValidConnection}
            onBeforeDelete={async () => {
              graph.checkpoint();
              return true;
            }}
            onNodeDragStart={onNodeDragStart}
            onNodeDrag={onNodeDrag}
            onReconnectStart={() => (reconnected.current = false)}
            onReconnect={onReconnect}
            onReconnectEnd={(_, edge) => {
              if (!reconnected.current) graph.removeEdge(edge.id);
              reconnected.current = true;
            }}
            onNodeContextMenu={(e, node) => {
              e.preventDefault();
              setMenu({ kind: "node", x: e.clientX, y: e.clientY, nodeId: node.id });
            }}
            onPaneContextMenu={(e) => {
              e.preventDefault();
              setMenu({ kind: "pane", x: e.clientX, y: e.clientY, flow: rf.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
            }}
            onPaneClick={() => setMenu(null)}
            zoomOnDoubleClick={false}
            deleteKeyCode={["Delete", "Backspace"]}
            minZoom={0.05}
            maxZoom={4}
            colorMode="dark"
            onlyRenderVisibleElements={onlyVisible}
            connectionRadius={24}
            reconnectRadius={12}
            edgesReconnectable
            autoPanOnConnect={false}
            elevateNodesOnSelect={false}
            defaultViewport={{ x: 0, y: 0, zoom: 1 }}
          >
            <Background variant={BackgroundVariant.Dots} gap={22} size={1.2} color="#3a3a3a" />
            <Controls showInteractive={false} />
            {nodes.length <= 300 && (
              <MiniMap
                pannable
                zoomable
                nodeColor={(n) => (n.type === "nf" ? typeColor(catalog.nodes[(n.data as NfData).type]?.outputs[0]?.type) : "#444")}
                maskColor="rgba(0,0,0,0.55)"
                style={{ background: "#1b1b1b" }}
              />
            )}
          </ReactFlow>
          {nodes.length === 0 && (
            <div className="nf-canvas-hint">
              Double-click to add a node, drag one from the palette, or load an example workflow.
            </div>
          )}
        </div>
        {showSide && (
          <div className="nf-side">
            <QueuePanel onLoadRun={(id) => void openRun(id)} />
            <Gallery onOpen={setLightbox} />
          </div>
        )}
      </div>
      <Notices />
      <ConfirmDialog />
      {search && (
        <NodeSearch
          x={search.x}
          y={search.y}
          hint={search.from ? `Nodes that fit ${search.from.type}…` : undefined}
          filter={searchFilter}
          onPick={pickFromSearch}
          onClose={() => setSearch(null)}
        />
      )}
      {menu && <ContextMenu menu={menu} onClose={() => setMenu(null)} openSearch={(s) => setSearch(s)} paste={paste} />}
      {help && <HelpPanel onClose={() => setHelp(false)} />}
      {lightbox && (
        <Lightbox
          url={lightbox}
          onClose={() => setLightbox(null)}
          onLoadWorkflow={async (url) => {
            if (await openPicture(url)) setLightbox(null);
          }}
        />
      )}
    </div>
  );
}

export function App() {
  const [ready, setReady] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    setError(null);
    try {
      const [nodes, types] = await Promise.all([api.nodes(), api.types()]);
      setCatalog(nodes, types);
      if (!graph.restore()) await loadDefaultGraph();
      initTabs(fitView);
      window.addEventListener("pagehide", () => graph.persist());
      setReady(true);
      nodeflowApi.ready = true;
      runState.connect();
      void loadExtensions();
      api
        .system()
        .then((system) => {
          setPlugins((system.plugins ?? []) as PluginDef[]);
          const failures = (system.failed_plugins ?? system.failures ?? []) as Record<string, unknown>[];
          for (const f of failures) {
            runState.addNotice(
              "warning",
              `Plugin ${String(f.plugin ?? "?")} failed to load (${String(f.stage ?? "import")}): ${String(f.error ?? "")}`,
              typeof f.traceback === "string" ? f.traceback : undefined,
            );
          }
        })
        .catch(() => {});
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  if (!ready) {
    return (
      <div className="nf-loading">
        {error ? (
          <div className="nf-banner" data-testid="error-banner">
            Cannot reach the nodeflow server: {error}{" "}
            <button className="nf-small-button" onClick={() => void load()}>
              retry
            </button>
          </div>
        ) : (
          "Loading nodes…"
        )}
      </div>
    );
  }
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}

// --- window.nodeflow: the test and debugging API -------------------------------------------

export const nodeflowApi = {
  ready: false,
  getWorkflow: (): WorkflowJson => graph.toTopWorkflow(),
  /** The canvas's own workflow (while a subgraph is open: its inner nodes). */
  getCanvasWorkflow: (): WorkflowJson => graph.toWorkflow(),
  /** Select exactly these nodes. */
  select: (ids: string[]) =>
    graph.applyNodeChanges(graph.state.nodes.map((n) => ({ type: "select" as const, id: n.id, selected: ids.includes(n.id) }))),
  convertToSubgraph: (name?: string) => convertSelection(name),
  openSubgraph: (id: string) => openSubgraph(id),
  closeSubgraph: () => closeSubgraph(),
  subgraphPath: () => openPath(),
  newTab: () => newTab(),
  switchTab: (id: string) => switchTab(id),
  loadWorkflow: (json: unknown) => loadWorkflow(typeof json === "string" ? JSON.parse(json) : json),
  addNode: (type: string, x = 0, y = 0): string => graph.addNode(type, { x, y }),
  queue: (options?: { front?: boolean; count?: number }) => queueWorkflow(options),
  clear: () => clearCanvas(),
  nodeState: (id: string) => runState.node(id),
  setValue: (id: string, name: string, value: unknown) => graph.setValue(id, name, value),
  connect: (source: string, output: string, target: string, input: string) =>
    graph.connect({ source, sourceHandle: output, target, targetHandle: input }),
  undo: () => graph.undo(),
  redo: () => graph.redo(),
  fitView: () => fitView(),
  /** The plugins' editor extensions: whether loading has finished, and each script and style. */
  extensions: () => extensionStatus(),
};

declare global {
  interface Window {
    nodeflow: typeof nodeflowApi;
  }
}
