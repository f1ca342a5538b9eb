// Side panels and overlays: palette, node search, queue/history, gallery, help, notices.
import { memo, useEffect, useMemo, useRef, useState } from "react";
import { api, imageUrl, type ImageRef, type NodeDef } from "../api";
import { typeColor } from "../catalog";
import { runState, useRunState } from "../runstate";
import { rankNodes, searchNodes } from "../search";

// --- node search (double-click on the canvas) -------------------------------------------

export function NodeSearch({
  x,
  y,
  hint,
  filter,
  onPick,
  onClose,
}: {
  x: number;
  y: number;
  hint?: string;
  filter?: (def: NodeDef) => boolean;
  onPick: (type: string) => void;
  onClose: () => void;
}) {
  const [query, setQuery] = useState("");
  const [index, setIndex] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);
  const list = useRef<HTMLDivElement>(null);
  const results = useMemo(() => searchNodes(query, filter).slice(0, 60), [query, filter]);
  useEffect(() => {
    input.current?.focus();
  }, []);
  useEffect(() => setIndex(0), [query]);
  useEffect(() => {
    list.current?.querySelector(".active")?.scrollIntoView({ block: "nearest" });
  }, [index]);
  const left = Math.max(8, Math.min(x, window.innerWidth - 380));
  const top = Math.max(8, Math.min(y, window.innerHeight - 420));
  return (
    <div className="nf-search" style={{ left, top }} onMouseDown={(e) => e.stopPropagation()} onDoubleClick={(e) => e.stopPropagation()}>
      <input
        ref={input}
        data-testid="node-search"
        placeholder={hint ?? "Search nodes…"}
        value={query}
        autoFocus
        onChange={(e) => setQuery(e.target.value)}
        onBlur={() => window.setTimeout(() => mounted.current && onClose(), 120)}
        onKeyDown={(e) => {
          if (e.key === "ArrowDown") {
            e.preventDefault();
            setIndex((i) => Math.min(i + 1, results.length - 1));
          } else if (e.key === "ArrowUp") {
            e.preventDefault();
            setIndex((i) => Math.max(i - 1, 0));
          } else if (e.key === "Enter") {
            e.preventDefault();
            const pick = results[index] ?? results[0];
            if (pick) onPick(pick.def.type);
          } else if (e.key === "Escape") {
            e.preventDefault();
            onClose();
          }
        }}
      />
      <div className="nf-search-results" ref={list}>
        {results.map(({ def, alias }, i) => (
          <div
            key={def.type}
            className={`nf-search-result${i === index ? " active" : ""}`}
            data-testid="search-result"
            data-type={def.type}
            title={def.description}
            onMouseDown={(e) => e.preventDefault()}
            onMouseEnter={() => setIndex(i)}
            onClick={() => onPick(def.type)}
          >
            <span className="name">{def.display_name || def.type}</span>
            {def.display_name && def.display_name !== def.type && <span className="type">{def.type}</span>}
            {alias && <span className="type" data-testid="search-alias">{alias}</span>}
            <span className="category">
              {def.plugin !== "nodes" ? `${def.plugin} · ` : ""}
              {def.category}
            </span>
          </div>
        ))}
        {results.length === 0 && <div className="nf-empty">No node matches “{query}”.</div>}
      </div>
    </div>
  );
}

// --- palette ---------------------------------------------------------------------------

export const Palette = memo(function Palette({ onAdd }: { onAdd: (type: string) => void }) {
  const [filter, setFilter] = useState("");
  const [closed, setClosed] = useState<Record<string, boolean>>({});
  const tree = useMemo(() => {
    const byPlugin = new Map<string, Map<string, NodeDef[]>>();
    for (const def of rankNodes(filter)) {
      const plugin = def.plugin || "?";
      const cats = byPlugin.get(plugin) ?? new Map<string, NodeDef[]>();
      const list = cats.get(def.category || "other") ?? [];
      list.push(def);
      cats.set(def.category || "other", list);
      byPlugin.set(plugin, cats);
    }
    return [...byPlugin.entries()]
      .sort(([a], [b]) => (a === "nodes" ? -1 : b === "nodes" ? 1 : a.localeCompare(b)))
      .map(([plugin, cats]) => [plugin, [...cats.entries()].sort(([a], [b]) => a.localeCompare(b))] as const);
  }, [filter]);
  return (
    <div className="nf-palette" data-testid="palette">
      <input
        className="nf-palette-filter"
        data-testid="palette-filter"
        placeholder="Filter nodes…"
        value={filter}
        onChange={(e) => setFilter(e.target.value)}
      />
      <div className="nf-palette-list">
        {tree.map(([plugin, cats]) => (
          <div key={plugin} className="nf-palette-plugin">
            <div className="nf-palette-plugin-name">{plugin === "nodes" ? "built-in" : plugin}</div>
            {cats.map(([cat, defs]) => {
              const key = `${plugin}/${cat}`;
              const isClosed = closed[key] && !filter;
              return (
                <div key={cat} className="nf-palette-category">
                  <div className="nf-palette-category-name" onClick={() => setClosed({ ...closed, [key]: !closed[key] })}>
                    {isClosed ? "▸" : "▾"} {cat}
                  </div>
                  {!isClosed &&
                    defs.map((def) => (
                      <div
                        key={def.type}
                        className="nf-palette-item"
                        data-testid="palette-item"
                        data-type={def.type}
                        title={def.description || def.type}
                        draggable
                        onDragStart={(e) => {
                          e.dataTransfer.setData("application/x-nodeflow-type", def.type);
                          e.dataTransfer.effectAllowed = "copy";
                        }}
                        onClick={() => onAdd(def.type)}
                      >
                        <span
                          className="dot"
                          style={{ background: typeColor(def.outputs[0]?.type) }}
                        />
                        {def.display_name || def.type}
                      </div>
                    ))}
                </div>
              );
            })}
          </div>
        ))}
      </div>
    </div>
  );
});

// --- queue and history -----------------------------------------------------------------

function when(t: unknown): string {
  const opts: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (typeof t === "number") return new Date(t * (t < 1e12 ? 1000 : 1)).toLocaleTimeString([], opts);
  if (typeof t === "string" && t) {
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? t : d.toLocaleTimeString([], opts);
  }
  return "";
}

export const QueuePanel = memo(function QueuePanel({ onLoadRun }: { onLoadRun: (id: string) => void }) {
  useRunState();
  const { runs, queue } = runState;
  const listed = new Set(runs.map((r) => r.run_id));
  const extra = [...(queue.running && !listed.has(queue.running) ? [queue.running] : []), ...queue.pending.filter((p) => !listed.has(p))];
  const items = [
    ...extra.map((id) => ({ run_id: id, status: id === queue.running ? "running" : "queued" })),
    ...runs.map((r) => ({
      ...r,
      status: r.run_id === queue.running ? "running" : r.status === "running" && queue.running !== r.run_id && runState.connected ? r.status : r.status,
    })),
  ];
  return (
    <div className="nf-queue" data-testid="queue-panel">
      <div className="nf-panel-header">
        <span>
          Queue <span className="nf-muted">· {queue.running ? "1 running" : "idle"} · {queue.pending.length} pending</span>
        </span>
        <button
          className="nf-small-button"
          data-testid="interrupt"
          disabled={!queue.running}
          title="Stop the running workflow"
          onClick={() => void api.interrupt().then(() => runState.scheduleRefresh())}
        >
          interrupt
        </button>
      </div>
      <div className="nf-run-list">
        {items.length === 0 && <div className="nf-empty">No runs yet. Queue one with Ctrl+Enter.</div>}
        {items.map((run) => {
          const r = run as (typeof runs)[number];
          const images = Object.values(r.outputs ?? {}).flatMap((rep) =>
            Array.isArray((rep as { images?: unknown })?.images) ? ((rep as { images: ImageRef[] }).images) : [],
          );
          return (
            <div key={r.run_id} className={`nf-run status-${r.status}`} data-testid="run-item" data-run-id={r.run_id} data-status={r.status}>
              <div className="nf-run-line">
                <span className={`nf-status status-${r.status}`}>{r.status}</span>
                <span className="nf-muted">{when(r.finished_at ?? r.started_at ?? r.submitted_at)}</span>
                <span className="nf-run-id" title={r.run_id}>
                  {r.run_id.slice(0, 6)}
                </span>
                <span className="nf-run-actions">
                  {(r.status === "queued" || r.status === "running") && (
                    <button
                      className="nf-small-button"
                      data-testid="cancel-run"
                      title={r.status === "running" ? "Cancel: interrupt this run" : "Cancel: remove it from the queue"}
                      onClick={() =>
                        void api
                          .cancel(r.run_id)
                          .catch((e: Error) => runState.setBanner(`Cancel failed: ${e.message}`))
                          .finally(() => runState.scheduleRefresh())
                      }
                    >
                      ✕
                    </button>
                  )}
                  <button className="nf-small-button" data-testid="load-run" title="Load this run's workflow" onClick={() => onLoadRun(r.run_id)}>
                    load
                  </button>
                </span>
              </div>
              {r.error?.message && (
                <div className="nf-run-error" title={String(r.error.message)}>
                  {r.error.node ? `${r.error.node}: ` : ""}
                  {String(r.error.message)}
                </div>
              )}
              {images.length > 0 && (
                <div className="nf-run-thumbs">
                  {images.slice(0, 4).map((im) => (
                    <img key={im.filename} src={imageUrl(im)} alt={im.filename} />
                  ))}
                </div>
              )}
            </div>
          );
        })}
      </div>
    </div>
  );
});

export const Gallery = memo(function Gallery({ onOpen }: { onOpen: (url: string) => void }) {
  useRunState();
  const images = runState.galleryImages().slice(0, 80);
  return (
    <div className="nf-gallery" data-testid="gallery">
      <div className="nf-panel-header">
        <span>
          Gallery <span className="nf-muted">· {images.length}</span>
        </span>
      </div>
      <div className="nf-gallery-grid">
        {images.length === 0 && <div className="nf-empty">Finished images appear here.</div>}
        {images.map(({ run, image }) => {
          const url = imageUrl(image);
          return (
            <img
              key={`${run}/${image.subfolder}/${image.filename}`}
              data-testid="gallery-image"
              src={url}
              alt={image.filename}
              title={`${image.filename} (run ${run.slice(0, 8)})`}
              loading="lazy"
              onClick={() => onOpen(url)}
            />
          );
        })}
      </div>
    </div>
  );
});

export function Lightbox({ url, onClose, onLoadWorkflow }: { url: string; onClose: () => void; onLoadWorkflow: (url: string) => void }) {
  return (
    <div className="nf-modal-backdrop" onClick={onClose} data-testid="lightbox">
      <div className="nf-lightbox" onClick={(e) => e.stopPropagation()}>
        <img src={url} alt="" />
        <div className="nf-lightbox-actions">
          <button onClick={() => onLoadWorkflow(url)} data-testid="lightbox-load">
            Load its workflow
          </button>
          <a href={url} download>
            <button>Download</button>
          </a>
          <button onClick={onClose}>Close</button>
        </div>
      </div>
    </div>
  );
}

// --- help ------------------------------------------------------------------------------

const SHORTCUTS: [string, string][] = [
  ["Ctrl+Enter", "Queue the workflow (batch count times)"],
  ["Ctrl+Shift+Enter", "Queue it ahead of the waiting runs"],
  ["Double-click canvas", "Search and add a node"],
  ["Drag from a socket to empty canvas", "Search nodes that fit, and connect"],
  ["Drag from a connected input", "Move its link to another input, or drop it on the canvas to detach it"],
  ["Ctrl+Z", "Undo"],
  ["Ctrl+Shift+Z / Ctrl+Y", "Redo"],
  ["Ctrl+C / Ctrl+V", "Copy / paste selected nodes (at the mouse)"],
  ["Ctrl+A", "Select all"],
  ["Delete / Backspace", "Delete selection"],
  ["Shift+drag", "Box-select"],
  ["Ctrl+click", "Add to selection"],
  ["Ctrl+G", "Group the selected nodes"],
  ["Ctrl+B", "Bypass the selected nodes (again: back to normal)"],
  ["Ctrl+M", "Mute the selected nodes (again: back to normal)"],
  ["Alt+Shift+←/→/↑/↓", "Align the selected nodes' left/right/top/bottom edges"],
  ["Alt+Shift+H / V", "Distribute the selected nodes horizontally / vertically"],
  ["Ctrl+S", "Save the workflow (download)"],
  ["Ctrl+O", "Load a workflow file"],
  ["F", "Fit the graph in view"],
  ["N", "Show or hide the node library"],
  ["Wheel / drag canvas", "Zoom / pan"],
  ["Right-click", "Node or canvas menu (convert widgets to inputs, bypass, mute, collapse, notes, groups)"],
  ["Double-click a link", "Add a reroute point (drag it; double-click it to remove it)"],
  ["?", "This help"],
  ["Esc", "Close menus and dialogs"],
];

export function HelpPanel({ onClose }: { onClose: () => void }) {
  return (
    <div className="nf-modal-backdrop" onClick={onClose}>
      <div className="nf-help" data-testid="help-panel" onClick={(e) => e.stopPropagation()}>
        <div className="nf-panel-header">
          <span>Keyboard shortcuts and tips</span>
          <button className="nf-small-button" data-testid="help-close" onClick={onClose}>
            close
          </button>
        </div>
        <table>
          <tbody>
            {SHORTCUTS.map(([k, v]) => (
              <tr key={k}>
                <td>
                  <kbd>{k}</kbd>
                </td>
                <td>{v}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <p className="nf-muted">
          Drop a workflow JSON or a PNG saved by SaveImage on the page to restore its graph (ComfyUI workflows and
          PNGs too: they are translated, and what runs approximated is listed); drop any other image to make a
          LoadImage node. Every widget with a number, text or boolean value can become an input socket (⇄).
          Your graph is kept in this browser across reloads.
        </p>
      </div>
    </div>
  );
}

// --- notices and banner ------------------------------------------------------------------

export const Notices = memo(function Notices() {
  useRunState();
  const { notices, banner } = runState;
  return (
    <div className="nf-notices">
      {banner && (
        <div className="nf-banner" data-testid="error-banner" role="alert">
          <span>{banner.text}</span>
          <button className="nf-small-button" onClick={() => runState.setBanner(null)} title="Dismiss">
            ✕
          </button>
        </div>
      )}
      {notices.map((n) => (
        <div key={n.id} className={`nf-notice ${n.kind}`} data-testid="notice" title={n.detail}>
          <span>{n.text}</span>
          <button className="nf-small-button" onClick={() => runState.dismissNotice(n.id)} title="Dismiss">
            ✕
          </button>
        </div>
      ))}
    </div>
  );
});
