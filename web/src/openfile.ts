// Opening workflow files: the Load button and drops (a file), "load" on a run, the lightbox's
// "Load its workflow" (a picture). A nodeflow workflow (JSON, or the `workflow` chunk of a PNG
// nodeflow made) loads as it is, keeping its layout and unknown keys; anything else (a ComfyUI
// file in API or UI format, a ComfyUI PNG) goes through POST /api/import, whose warnings become
// notices and whose errors are told like validation errors. Each asks first when the canvas has
// unsaved changes (mayReplaceCanvas).
import type { XYPosition } from "@xyflow/react";
import { loadWorkflow } from "./actions";
import { api, ApiError, type Issue } from "./api";
import { mayReplaceCanvas } from "./components/Confirm";
import { uploadImage } from "./components/Widgets";
import { graph } from "./graph";
import { pngTextChunks } from "./png";
import { runState } from "./runstate";

/** What a file is, as far as opening it goes. */
export type FileKind =
  | { kind: "workflow"; workflow: unknown } // nodeflow's own: loaded here as it is
  | { kind: "import"; body: Blob; document?: unknown } // another format: the server translates it
  | { kind: "image" } // a picture that carries no workflow
  | { kind: "unknown" };

const PNG = [137, 80, 78, 71, 13, 10, 26, 10];
const IMAGE = /\.(png|jpe?g|webp|gif|bmp|tiff?)$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

/** A nodeflow workflow (`{"nodes": {...}}`), as the server's `is_native` tells it. */
export function isNativeWorkflow(document: unknown): boolean {
  return isObject(document) && isObject(document.nodes);
}

function parse(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function classify(file: Blob, name: string): Promise<FileKind> {
  const lower = name.toLowerCase();
  const buffer = await file.arrayBuffer();
  const bytes = new Uint8Array(buffer, 0, Math.min(8, buffer.byteLength));
  if (bytes.length === 8 && PNG.every((b, i) => bytes[i] === b)) {
    const chunks = (await pngTextChunks(buffer)) ?? {};
    const own = parse(chunks.workflow);
    if (isNativeWorkflow(own)) return { kind: "workflow", workflow: own };
    // ComfyUI writes "prompt" (API format) and "workflow" (UI format)
    if (chunks.prompt !== undefined || chunks.workflow !== undefined) return { kind: "import", body: file };
    return { kind: "image" };
  }
  if (file.type.startsWith("image/") || IMAGE.test(lower)) return { kind: "image" };
  const text = new TextDecoder().decode(buffer);
  const document = parse(text);
  if (isNativeWorkflow(document)) return { kind: "workflow", workflow: document };
  const looksJson = lower.endsWith(".json") || file.type === "application/json" || /^\s*[[{]/.test(text);
  // another format, or broken JSON: the server says which, with its precise message
  return looksJson ? { kind: "import", body: file, document } : { kind: "unknown" };
}

// --- telling what the import said ---------------------------------------------------------

/** The node's type in the source file, to name it beside its id (ComfyUI API or UI format). */
function sourceType(document: unknown, id: string): string | undefined {
  if (!isObject(document)) return undefined;
  if (Array.isArray(document.nodes)) {
    const found = document.nodes.find((n) => isObject(n) && String(n.id) === id);
    return isObject(found) && typeof found.type === "string" ? found.type : undefined;
  }
  const entry = document[id];
  return isObject(entry) && typeof entry.class_type === "string" ? entry.class_type : undefined;
}

/** "node 8 (VAEDecode), samples: message", or just the message when it names no node. */
export function locate(issue: Issue, type?: string): string {
  if (!issue.node) return issue.input ? `${issue.input}: ${issue.message}` : issue.message;
  const where = `node ${issue.node}${type ? ` (${type})` : ""}${issue.input ? `, ${issue.input}` : ""}`;
  return `${where}: ${issue.message}`;
}

function formatName(format: string): string {
  return format.startsWith("comfyui") ? "ComfyUI" : format;
}

function showWarnings(name: string, format: string, warnings: Issue[], titles: Record<string, unknown>) {
  for (const w of warnings) {
    const ui = w.node ? titles[w.node] : undefined;
    const title = isObject(ui) && typeof ui.title === "string" ? ui.title : undefined;
    runState.addNotice("warning", `${name} (${formatName(format)}): ${locate(w, title)}`);
  }
}

/** A refused import: nothing was loaded, so the canvas keeps its nodes (the issues' ids are the
 * file's, not the canvas's); each issue is a notice, the banner says how many. */
function showImportErrors(name: string, issues: Issue[], document: unknown) {
  const count = issues.length;
  runState.setBanner(
    count === 1
      ? `Cannot open ${name}: ${locate(issues[0], issues[0].node ? sourceType(document, issues[0].node) : undefined)}`
      : `Cannot open ${name}: ${count} problems (listed below).`,
  );
  if (count === 1) return;
  for (const issue of issues) {
    runState.addNotice("error", `${name}: ${locate(issue, issue.node ? sourceType(document, issue.node) : undefined)}`);
  }
}

// --- opening --------------------------------------------------------------------------------

/** Replace the canvas with what `kind` holds, asking first if that loses unsaved work. Returns
 * whether the canvas was replaced. Throws on a workflow the editor cannot read. */
async function openWorkflow(kind: FileKind & { kind: "workflow" | "import" }, name: string): Promise<boolean> {
  let workflow: unknown;
  let format = "nodeflow";
  let warnings: Issue[] = [];
  if (kind.kind === "import") {
    try {
      const imported = await api.importFile(kind.body);
      ({ workflow, format } = imported);
      warnings = imported.warnings ?? [];
    } catch (err) {
      const issues = err instanceof ApiError && err.status === 400 ? (err.body as { errors?: Issue[] })?.errors : undefined;
      if (!issues?.length) throw err;
      showImportErrors(name, issues, kind.document);
      return false;
    }
  } else {
    workflow = kind.workflow;
  }
  if (!(await mayReplaceCanvas(`Opening ${name}`))) return false;
  loadWorkflow(workflow);
  const ui = isObject(workflow) && isObject(workflow.ui) && isObject(workflow.ui.nodes) ? workflow.ui.nodes : {};
  showWarnings(name, format, warnings, ui);
  return true;
}

/** A file from the Load button or a drop: a workflow replaces the canvas; a picture without one
 * becomes a LoadImage node at `where()`. */
export async function openFile(file: File, where: () => XYPosition): Promise<void> {
  try {
    const kind = await classify(file, file.name);
    if (kind.kind === "image") {
      const name = await uploadImage(file, file.name);
      const id = graph.addNode("LoadImage", where());
      graph.setValue(id, "path", name);
    } else if (kind.kind === "unknown") {
      runState.setBanner(`Cannot open ${file.name}: expected a workflow .json (nodeflow or ComfyUI) or an image.`);
    } else {
      await openWorkflow(kind, file.name);
    }
  } catch (err) {
    runState.setBanner(`Cannot open ${file.name}: ${(err as Error).message}`);
  }
}

/** The workflow of a picture (the lightbox's "Load its workflow"): nodeflow's or ComfyUI's.
 * Returns whether the canvas was replaced. */
export async function openPicture(url: string): Promise<boolean> {
  const name = decodeURIComponent(url.split("/").pop() ?? "the picture");
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const kind = await classify(await response.blob(), name);
    if (kind.kind !== "workflow" && kind.kind !== "import") throw new Error("this picture carries no workflow");
    return await openWorkflow(kind, name);
  } catch (err) {
    runState.setBanner(`Cannot load the workflow: ${(err as Error).message}`);
    return false;
  }
}

/** "load" on a run in the queue or history: the workflow it ran. */
export async function openRun(id: string): Promise<boolean> {
  try {
    const run = await api.run(id);
    if (!run.workflow) throw new Error(`run ${id} has no workflow`);
    if (!(await mayReplaceCanvas(`Loading run ${id}`))) return false;
    loadWorkflow(run.workflow);
    return true;
  } catch (err) {
    runState.setBanner(`Cannot load the run's workflow: ${(err as Error).message}`);
    return false;
  }
}
