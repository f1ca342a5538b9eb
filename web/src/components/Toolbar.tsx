// The toolbar: queue, save and load, the example workflows, undo/redo, fit, clear, connection.
import { useState } from "react";
import { batchCount, clearCanvas, loadWorkflow, MAX_BATCH, queueWorkflow, setBatchCount } from "../actions";
import { api, type ExampleInfo } from "../api";
import { graph } from "../graph";
import { runState, useRunState } from "../runstate";
import { mayReplaceCanvas } from "./Confirm";

/** An example workflow in the list; `noise` when it uses random test models. */
export interface Example {
  name: string;
  noise: boolean;
  models: Record<string, string>;
}

function examplesOf(answer: { workflows: string[]; examples?: ExampleInfo[] }): Example[] {
  const info = new Map((answer.examples ?? []).map((e) => [e.name, e]));
  return answer.workflows.map((name) => {
    const models = info.get(name)?.test_models ?? {};
    return { name, noise: Object.keys(models).length > 0, models };
  });
}

function noiseNote(ex: Example): string {
  const names = Object.entries(ex.models).map(([name, what]) => `${name}: ${what}`);
  return `Uses random tiny test models, so its pictures are noise (${names.join("; ")}).`;
}

export function Toolbar(props: {
  canUndo: boolean;
  canRedo: boolean;
  onFit: () => void;
  onSave: () => void;
  onOpenFile: (f: File) => void;
  fileInput: React.RefObject<HTMLInputElement | null>;
  onHelp: () => void;
  examples: Example[] | null;
  setExamples: (e: Example[] | null) => void;
  togglePalette: () => void;
  toggleSide: () => void;
}) {
  const [queueing, setQueueing] = useState(false);
  const [batch, setBatch] = useState(batchCount);
  const queue = async (front: boolean) => {
    setQueueing(true);
    try {
      await queueWorkflow({ front });
    } finally {
      setQueueing(false);
    }
  };
  const { examples, setExamples } = props;
  return (
    <div className="nf-toolbar">
      <button className="nf-icon-button" data-testid="palette-button" onClick={props.togglePalette} title="Show or hide the node library (N)">
        ☰ Nodes
      </button>
      <span className="nf-logo">nodeflow</span>
      <button
        className="nf-primary"
        data-testid="queue-button"
        title="Queue the workflow (Ctrl+Enter), batch count times"
        disabled={queueing}
        onClick={() => void queue(false)}
      >
        ▶ Queue
      </button>
      <input
        className="nf-batch"
        data-testid="batch-count"
        type="number"
        min={1}
        max={MAX_BATCH}
        value={batch}
        title="Batch count: how many runs one Queue makes (seeds follow each seed widget's control)"
        onChange={(e) => {
          const n = Number(e.target.value);
          if (Number.isInteger(n) && n >= 1) {
            setBatchCount(n);
            setBatch(batchCount());
          }
        }}
      />
      <button
        data-testid="queue-front"
        title="Queue ahead of the runs already waiting (Ctrl+Shift+Enter)"
        disabled={queueing}
        onClick={() => void queue(true)}
      >
        ⇡ Front
      </button>
      <span className="nf-sep" />
      <button data-testid="save-workflow" onClick={props.onSave} title="Download the workflow as JSON (Ctrl+S)">
        Save
      </button>
      <label className="nf-button" title="Load a workflow: nodeflow or ComfyUI JSON, or a PNG made by either (Ctrl+O)">
        Load
        <input
          ref={props.fileInput}
          type="file"
          data-testid="load-workflow"
          accept=".json,application/json,image/png"
          className="nf-hidden-input"
          onChange={(e) => {
            const f = e.target.files?.[0];
            e.target.value = "";
            if (f) props.onOpenFile(f);
          }}
        />
      </label>
      <div className="nf-dropdown">
        <button
          data-testid="examples-button"
          onClick={async () => {
            if (examples) return setExamples(null);
            try {
              setExamples(examplesOf(await api.workflows()));
            } catch (err) {
              runState.setBanner(`Cannot list example workflows: ${(err as Error).message}`);
            }
          }}
        >
          Examples ▾
        </button>
        {examples && (
          <div className="nf-dropdown-menu" data-testid="examples-menu">
            {examples.length === 0 && <div className="nf-empty">No example workflows.</div>}
            {examples.map((ex) => (
              <div
                key={ex.name}
                className="nf-menu-item nf-example"
                data-testid="example"
                data-name={ex.name}
                data-test-models={ex.noise ? "true" : "false"}
                title={ex.noise ? noiseNote(ex) : undefined}
                onClick={async () => {
                  setExamples(null);
                  try {
                    const workflow = await api.workflow(ex.name);
                    if (await mayReplaceCanvas(`Loading ${ex.name}`)) loadWorkflow(workflow);
                  } catch (err) {
                    runState.setBanner(`Cannot load ${ex.name}: ${(err as Error).message}`);
                  }
                }}
              >
                <span>{ex.name.replace(/\.json$/, "")}</span>
                {ex.noise && (
                  <span className="nf-example-noise" data-testid="example-test-models">
                    test models: noise
                  </span>
                )}
              </div>
            ))}
            {examples.some((ex) => ex.noise) && (
              <div className="nf-example-note">
                Examples marked “test models” use random tiny models made for tests: they run, but their
                pictures are noise.
              </div>
            )}
          </div>
        )}
      </div>
      <span className="nf-sep" />
      <button data-testid="undo" disabled={!props.canUndo} onClick={() => graph.undo()} title="Undo (Ctrl+Z)">
        ↶ Undo
      </button>
      <button data-testid="redo" disabled={!props.canRedo} onClick={() => graph.redo()} title="Redo (Ctrl+Shift+Z)">
        ↷ Redo
      </button>
      <button data-testid="fit-view" onClick={props.onFit} title="Fit the graph in view (F)">
        ⤢ Fit
      </button>
      <button
        data-testid="clear-canvas"
        onClick={async () => {
          if (await mayReplaceCanvas("Clear")) clearCanvas();
        }}
        title="Remove every node (undo brings them back)"
      >
        Clear
      </button>
      <span className="nf-spacer" />
      <ConnectionStatus />
      <button data-testid="help-button" onClick={props.onHelp} title="Keyboard shortcuts (?)">
        ?
      </button>
      <button className="nf-icon-button" onClick={props.toggleSide} title="Show or hide the queue and gallery">
        ▤
      </button>
    </div>
  );
}

function ConnectionStatus() {
  useRunState();
  return (
    <span
      className={`nf-conn ${runState.connected ? "on" : "off"}`}
      data-testid="connection-status"
      data-connected={runState.connected}
      title={runState.connected ? "Connected to the server" : "Disconnected: reconnecting…"}
    >
      ● {runState.connected ? "connected" : "offline"}
    </span>
  );
}

