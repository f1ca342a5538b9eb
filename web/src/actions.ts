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

export async function queueWorkflow(): Promise<{ run_id?: string; errors?: Issue[] }> {
  const workflow = graph.toTopWorkflow();
  if (!Object.keys(workflow.nodes).length) {
    runState.setBanner("Nothing to queue: the canvas is empty.");
    return { errors: [] };
  }
  runState.clearErrors();
  try {
    const result = await api.submit(workflow);
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
