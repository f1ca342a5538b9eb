// What the toolbar, the keyboard, drag and drop and window.nodeflow do to the whole canvas:
// replace it with a workflow, clear it, queue it.
import { api, ApiError, type Issue } from "./api";
import { graph } from "./graph";
import { runState } from "./runstate";
import { leaveAll } from "./subgraphs";

let fitRequest: (() => void) | null = null;

/** The editor's fit-the-view (set while the canvas is mounted). */
export function setFitRequest(fit: (() => void) | null) {
  fitRequest = fit;
}

export function fitView() {
  fitRequest?.();
}

/** Replace the canvas with a workflow (from a file, an example, a run, a picture). */
export function loadWorkflow(json: unknown, fit = true) {
  leaveAll();
  graph.loadWorkflow(json);
  runState.resetNodes();
  runState.setBanner(null);
  if (fit) fitView();
}

/** The first visit's canvas (nothing saved in this browser yet): the txt2img example on the
 * built-in model, ready to queue. Without it (an older server), the canvas stays empty. */
export const DEFAULT_WORKFLOW = "txt2img.json";

export async function loadDefaultGraph(): Promise<void> {
  try {
    graph.loadWorkflow(await api.workflow(DEFAULT_WORKFLOW), { undoable: false });
    graph.markSaved();
    fitView();
  } catch {
    /* no example to start from: an empty canvas */
  }
}

/** Remove every node (undo brings them back). */
export function clearCanvas() {
  leaveAll();
  graph.clear();
  runState.resetNodes();
  runState.setBanner(null);
}

/** How many runs one Queue makes (the toolbar's batch count; kept in this browser). */
const BATCH_KEY = "nodeflow.batch";
export const MAX_BATCH = 100;

export function batchCount(): number {
  const n = Number(localStorage.getItem(BATCH_KEY) ?? 1);
  return Number.isInteger(n) && n >= 1 ? Math.min(n, MAX_BATCH) : 1;
}

export function setBatchCount(n: number) {
  localStorage.setItem(BATCH_KEY, String(Math.max(1, Math.min(MAX_BATCH, Math.floor(n) || 1))));
}

/** Queue the whole workflow `count` times (the batch count unless given), applying the seed
 * widgets' controls (randomize, increment) after each run, as ComfyUI does, so each run gets
 * its own seed. `front`: ahead of the runs already waiting. Stops at the first refusal. */
export async function queueWorkflow(
  options: { front?: boolean; count?: number } = {},
): Promise<{ run_id?: string; run_ids?: string[]; errors?: Issue[] }> {
  const count = options.count ?? batchCount();
  const runIds: string[] = [];
  for (let i = 0; i < count; i++) {
    const result = await queueOnce(!!options.front);
    if (!result.run_id) return runIds.length ? { ...result, run_ids: runIds } : result;
    runIds.push(result.run_id);
  }
  return { run_id: runIds[runIds.length - 1], run_ids: runIds };
}

async function queueOnce(front: boolean): Promise<{ run_id?: string; errors?: Issue[] }> {
  const workflow = graph.toTopWorkflow();
  if (!Object.keys(workflow.nodes).length) {
    runState.setBanner("Nothing to queue: the canvas is empty.");
    return { errors: [] };
  }
  runState.clearErrors();
  try {
    const result = await api.submit(workflow, front);
    runState.markQueued(Object.keys(workflow.nodes), result.run_id);
    graph.applySeedControls();
    runState.scheduleRefresh(0);
    return { run_id: result.run_id };
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) {
      const issues = ((err.body as { errors?: Issue[] })?.errors ?? []) as Issue[];
      if (issues.length) {
        runState.showIssues(issues, (id) => !!graph.node(id));
        return { errors: issues };
      }
    }
    runState.setBanner(`Could not queue the workflow: ${(err as Error).message}`);
    return { errors: [] };
  }
}
