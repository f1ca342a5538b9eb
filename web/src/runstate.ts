// What the server tells us: per-node execution state (from websocket events and validation
// errors), the queue and history, notices and the error banner.
import { useSyncExternalStore } from "react";
import { api, imageUrl, reportImages, type ImageRef, type Issue, type RunSummary } from "./api";

export type NodeState = "idle" | "queued" | "running" | "cached" | "done" | "error";

export interface NodeRun {
  state: NodeState;
  progress?: { value: number; max: number };
  preview?: string; // blob: URL of the latest latent preview
  previewStep?: number;
  images?: ImageRef[];
  error?: string;
  errorDetail?: string;
  /** Input errors in one text (for the title tooltip). */
  errorSummary?: string;
  inputErrors?: Record<string, string>;
}

const IDLE: NodeRun = { state: "idle" };
const NO_PROGRESS: Partial<NodeRun> = { progress: undefined, preview: undefined, previewStep: undefined };

export interface Notice {
  id: number;
  kind: "error" | "warning" | "info";
  text: string;
  detail?: string;
}

class RunState {
  private nodes = new Map<string, NodeRun>();
  private nodeListeners = new Map<string, Set<() => void>>();
  private listeners = new Set<() => void>();
  /** The run whose events paint the canvas (the one executing, or the last one). */
  activeRun: string | null = null;
  /** The run executing now (between its run.started and its end), or null. */
  executing: string | null = null;
  runs: RunSummary[] = [];
  queue: { running: string | null; pending: string[] } = { running: null, pending: [] };
  notices: Notice[] = [];
  banner: { text: string; detail?: string } | null = null;
  connected = false;
  version = 0;
  private noticeId = 0;
  private refreshTimer: number | undefined;

  // --- subscriptions ---------------------------------------------------------------------

  subscribe = (l: () => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };
  getVersion = () => this.version;
  private emit() {
    this.version++;
    for (const l of this.listeners) l();
  }

  subscribeNode(id: string, l: () => void) {
    let set = this.nodeListeners.get(id);
    if (!set) this.nodeListeners.set(id, (set = new Set()));
    set.add(l);
    return () => set!.delete(l);
  }
  node(id: string): NodeRun {
    return this.nodes.get(id) ?? IDLE;
  }
  private setNode(id: string, next: NodeRun) {
    const prev = this.nodes.get(id);
    if (prev?.preview && prev.preview !== next.preview) URL.revokeObjectURL(prev.preview);
    this.nodes.set(id, next);
    for (const l of this.nodeListeners.get(id) ?? []) l();
  }
  private patchNode(id: string, patch: Partial<NodeRun>) {
    this.setNode(id, { ...this.node(id), ...patch });
  }

  /** Forget every node's state (a new run starts, or the canvas was replaced). */
  resetNodes(keep?: (id: string, run: NodeRun) => NodeRun | null) {
    for (const [id, run] of [...this.nodes]) {
      const next = keep ? keep(id, run) : null;
      this.setNode(id, next ?? IDLE);
    }
  }

  // --- validation errors -----------------------------------------------------------------

  /** Show a 400's issues on their nodes and inputs; the rest in the banner. */
  showIssues(issues: Issue[], known: (id: string) => boolean) {
    this.clearErrors();
    const general: string[] = [];
    const perNode = new Map<string, { messages: string[]; inputs: Record<string, string> }>();
    for (const raw of issues) {
      // an issue inside a subgraph instance ("<instance>/<inner>") is shown on the instance
      const [outer, ...inner] = (raw.node ?? "").split("/");
      const issue = inner.length ? { ...raw, node: outer, input: null, message: `${inner.join("/")}${raw.input ? `.${raw.input}` : ""}: ${raw.message}` } : raw;
      if (!issue.node || !known(issue.node)) {
        general.push(issue.node ? `${issue.node}: ${issue.message}` : issue.message);
        continue;
      }
      const entry = perNode.get(issue.node) ?? { messages: [], inputs: {} };
      if (issue.input) {
        entry.inputs[issue.input] = entry.inputs[issue.input]
          ? `${entry.inputs[issue.input]}; ${issue.message}`
          : issue.message;
      } else {
        entry.messages.push(issue.message);
      }
      perNode.set(issue.node, entry);
    }
    for (const [id, entry] of perNode) {
      const inputMessages = Object.entries(entry.inputs).map(([k, v]) => `${k}: ${v}`);
      this.setNode(id, {
        state: "error",
        error: entry.messages.length ? entry.messages.join("\n") : undefined,
        errorSummary: inputMessages.join("\n"),
        inputErrors: entry.inputs,
      });
    }
    const count = issues.length;
    this.banner = {
      text:
        general.length > 0
          ? `The workflow was not queued: ${general.join("; ")}`
          : `The workflow was not queued: ${count} problem${count === 1 ? "" : "s"} (marked on the nodes).`,
    };
    this.emit();
  }

  clearErrors() {
    for (const [id, run] of [...this.nodes]) {
      if (run.state === "error" || run.inputErrors) {
        this.setNode(id, { ...run, state: run.state === "error" ? "idle" : run.state, error: undefined, inputErrors: undefined });
      }
    }
    this.banner = null;
    this.emit();
  }

  /** Runs whose run.started we have seen (a fast run may start before its POST returns). */
  private started = new Set<string>();

  markQueued(ids: string[], runId?: string) {
    if (runId && this.started.has(runId)) return;
    // Another run is executing: its nodes keep their states; this run's run.started repaints.
    const busy = this.executing ?? this.queue.running;
    if (busy && busy !== runId) return;
    for (const id of ids) {
      const run = this.node(id);
      if (run.state !== "running") this.setNode(id, { ...run, state: "queued", error: undefined, inputErrors: undefined });
    }
  }

  setBanner(text: string | null, detail?: string) {
    this.banner = text ? { text, detail } : null;
    this.emit();
  }

  addNotice(kind: Notice["kind"], text: string, detail?: string) {
    this.notices = [...this.notices, { id: ++this.noticeId, kind, text, detail }];
    this.emit();
  }
  dismissNotice(id: number) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.emit();
  }

  // --- events ----------------------------------------------------------------------------

  private taps = new Set<(msg: Record<string, unknown>) => void>();
  /** Also hand each websocket event (after the editor's own handling) to `tap`. */
  tapEvents(tap: (msg: Record<string, unknown>) => void): () => void {
    this.taps.add(tap);
    return () => this.taps.delete(tap);
  }

  handleEvent(msg: Record<string, unknown>) {
    const type = msg.type as string;
    const runId = msg.run_id as string | undefined;
    // a subgraph instance's nodes run as "<instance>/<inner>": shown on the instance
    const node = (msg.node as string | undefined)?.split("/")[0];
    if (type === "queue") {
      this.queue = {
        running: (msg.running as string | null) ?? null,
        pending: Array.isArray(msg.pending) ? (msg.pending as string[]) : [],
      };
      this.emit();
      this.scheduleRefresh();
      return;
    }
    if (type === "run.started") {
      this.activeRun = runId ?? null;
      this.executing = runId ?? null;
      if (runId) this.started.add(runId);
      const planned = new Set(Array.isArray(msg.nodes) ? (msg.nodes as string[]).map((n) => n.split("/")[0]) : []);
      this.resetNodes((id, run) =>
        planned.has(id) ? { state: "queued" } : run.state === "queued" ? IDLE : { ...run, progress: undefined, preview: undefined },
      );
      for (const id of planned) this.setNode(id, { state: "queued" });
      this.banner = null;
      this.emit();
      this.scheduleRefresh();
      return;
    }
    if (type.startsWith("run.") && runId && runId === this.executing) this.executing = null;
    if (runId && this.activeRun && runId !== this.activeRun) {
      if (type.startsWith("run.")) this.scheduleRefresh();
      return;
    }
    switch (type) {
      case "node.cached":
        if (node) this.setNode(node, { state: "cached" });
        break;
      case "node.started":
        if (node) this.setNode(node, { state: "running" });
        break;
      case "node.progress":
        if (node) {
          const cur = this.node(node);
          this.setNode(node, {
            ...cur,
            state: cur.state === "queued" || cur.state === "idle" ? "running" : cur.state,
            progress: { value: Number(msg.value ?? 0), max: Number(msg.max ?? 1) },
          });
        }
        break;
      case "node.finished": {
        if (!node) break;
        const images = reportImages(msg.report);
        const cur = this.node(node);
        // the step progress and latent previews were for watching it run; it has finished
        this.setNode(node, { ...cur, ...NO_PROGRESS, state: "done", ...(images.length ? { images } : {}) });
        break;
      }
      case "node.error":
        if (node) {
          const exc = msg.exception_type ? `${msg.exception_type}: ` : "";
          this.patchNode(node, {
            state: "error",
            error: `${exc}${msg.message ?? "failed"}`,
            errorDetail: typeof msg.traceback === "string" ? msg.traceback : undefined,
          });
        }
        break;
      case "run.failed": {
        const known = node && this.nodes.get(node)?.state === "error";
        if (!known) this.banner = { text: `Run failed${node ? ` at ${node}` : ""}: ${msg.message ?? ""}` };
        this.settle();
        this.scheduleRefresh();
        break;
      }
      case "run.finished":
        this.settle();
        this.scheduleRefresh();
        if (runId) void this.showCachedOutputs(runId);
        break;
      case "run.cancelled":
        this.settle();
        this.scheduleRefresh();
        break;
    }
    this.emit();
  }

  /** After a run: nodes still queued or running go back to idle; progress bars and latent
   * previews go (they show a run in progress). */
  private settle() {
    for (const [id, run] of [...this.nodes]) {
      const waiting = run.state === "queued" || run.state === "running";
      if (waiting || run.progress || run.preview) {
        this.setNode(id, { ...run, ...NO_PROGRESS, state: waiting ? "idle" : run.state });
      }
    }
  }

  /**
   * The pictures of the run's output nodes that did not run (cached): node.cached carries no
   * report, the run record has them all. Shown on nodes still painted by this run.
   */
  private async showCachedOutputs(runId: string) {
    let outputs: Record<string, unknown> | null | undefined;
    try {
      outputs = (await api.run(runId)).outputs;
    } catch {
      return; /* the history panel shows the server is gone */
    }
    if (this.activeRun !== runId || !outputs) return;
    for (const [flatId, report] of Object.entries(outputs)) {
      const images = reportImages(report);
      const id = flatId.split("/")[0]; // an output node inside a subgraph: its instance
      const cur = this.node(id);
      if (images.length && cur.state === "cached" && !cur.images?.length) this.setNode(id, { ...cur, images });
    }
  }

  handlePreview(data: ArrayBuffer) {
    try {
      const view = new DataView(data);
      const len = view.getUint32(0, false);
      const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, len))) as {
        run_id?: string;
        node?: string;
        step?: number;
        format?: string;
      };
      if (!header.node) return;
      if (header.run_id && this.activeRun && header.run_id !== this.activeRun) return;
      const cur = this.node(header.node.split("/")[0]);
      if (cur.state === "done" || cur.state === "cached" || cur.state === "error") return; // a late frame
      if (cur.previewStep !== undefined && header.step !== undefined && header.step < cur.previewStep && cur.state === "running") return;
      const blob = new Blob([new Uint8Array(data, 4 + len)], { type: `image/${header.format ?? "jpeg"}` });
      this.setNode(header.node.split("/")[0], { ...cur, preview: URL.createObjectURL(blob), previewStep: header.step });
    } catch {
      /* a malformed frame is ignored */
    }
  }

  // --- history ---------------------------------------------------------------------------

  scheduleRefresh(delay = 150) {
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => void this.refreshRuns(), delay);
  }

  async refreshRuns() {
    try {
      const { runs } = await api.runs(60);
      this.runs = runs;
      this.emit();
    } catch {
      /* shown as disconnected elsewhere */
    }
  }

  /** Images of finished runs, newest first; a file is listed once (a cached rerun's output
   * node reports the file an earlier run wrote). */
  galleryImages(): { run: string; node: string; image: ImageRef }[] {
    const out: { run: string; node: string; image: ImageRef }[] = [];
    const seen = new Set<string>();
    for (const run of this.runs) {
      if (!run.outputs) continue;
      for (const [node, report] of Object.entries(run.outputs)) {
        for (const image of reportImages(report)) {
          const url = imageUrl(image);
          if (image.type !== "output" || seen.has(url)) continue;
          seen.add(url);
          out.push({ run: run.run_id, node, image });
        }
      }
    }
    return out;
  }

  // --- websocket -------------------------------------------------------------------------

  private retry = 500;

  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/ws`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this.connected = true;
      this.retry = 500;
      this.emit();
      void this.refreshRuns();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        try {
          const msg = JSON.parse(ev.data) as Record<string, unknown>;
          this.handleEvent(msg);
          for (const tap of this.taps) tap(msg);
        } catch {
          /* ignore malformed */
        }
      } else if (ev.data instanceof ArrayBuffer) {
        this.handlePreview(ev.data);
      }
    };
    ws.onclose = () => {
      this.connected = false;
      this.emit();
      window.setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }
}

export const runState = new RunState();

export function useNodeRun(id: string): NodeRun {
  return useSyncExternalStore(
    (l) => runState.subscribeNode(id, l),
    () => runState.node(id),
  );
}

export function useRunState(): number {
  return useSyncExternalStore(runState.subscribe, runState.getVersion);
}
