// A node on the canvas: title, typed sockets, widgets, run state, previews and images.
import {
  Handle,
  NodeResizer,
  Position,
  useStore,
  useUpdateNodeInternals,
  type NodeProps,
  type ReactFlowState,
} from "@xyflow/react";
import { memo, useEffect, useState, useSyncExternalStore } from "react";
import { imageUrl } from "../api";
import { catalog, convertible, typeColor } from "../catalog";
import { graph, type GroupNode, type NfNode, type NoteNode } from "../graph";
import { isPrimitive, targetChoicesKey } from "../primitives";
import { useNodeRun } from "../runstate";
import { InputSocket, type SocketRow } from "./InputSocket";
import { Widget } from "./Widgets";


/** In big graphs, below this zoom, nodes draw their widgets as plain blocks (cheap to paint). */
const COMPACT_ZOOM = 0.45;
const COMPACT_MIN_NODES = 150;
/**
 * The coarse detail level: true while a big graph is zoomed out below COMPACT_ZOOM. Components
 * must read the viewport only through this (a boolean, so they re-render when the zoom crosses
 * the threshold, never on each pan or zoom step).
 */
export const compactSelector = (s: ReactFlowState) => s.transform[2] < COMPACT_ZOOM && s.nodes.length > COMPACT_MIN_NODES;

const noSubscription = () => () => {};

/** A primitive's choices: those of the choice widget it feeds (a Combo feeding a sampler name). */
function useTargetChoices(id: string, primitive: boolean): unknown[] | undefined {
  const key = useSyncExternalStore(primitive ? graph.subscribe : noSubscription, () =>
    primitive ? targetChoicesKey(graph.state.nodes, graph.state.edges, id) : "",
  );
  return key ? (JSON.parse(key) as unknown[]) : undefined;
}

export const FlowNode = memo(function FlowNode({ id, data, selected }: NodeProps<NfNode>) {
  const run = useNodeRun(id);
  const compact = useStore(compactSelector);
  const def = catalog.nodes[data.type];
  const [showTrace, setShowTrace] = useState(false);
  const choices = useTargetChoices(id, !!def && isPrimitive(data.type));
  const collapsed = !!data.collapsed;
  const updateInternals = useUpdateNodeInternals();
  useEffect(() => updateInternals(id), [collapsed, id, updateInternals]); // handles moved

  const inputs: SocketRow[] = [];
  const widgets: [string, NonNullable<typeof def>["inputs"][string]][] = [];
  if (def) {
    for (const [name, input] of Object.entries(def.inputs)) {
      if (input.kind === "socket") inputs.push({ name, type: input.type, required: input.required });
      else if (data.converted.includes(name)) inputs.push({ name, type: input.type, converted: true, required: input.required });
      else widgets.push([name, input]);
    }
  } else if (data.unknown) {
    for (const name of data.unknown.inputs) inputs.push({ name, type: "*" });
  }
  const outputs: SocketRow[] = def
    ? def.outputs.map((o) => ({ name: o.name, type: o.type }))
    : (data.unknown?.outputs ?? []).map((name) => ({ name, type: "*" }));
  const rows = Math.max(inputs.length, outputs.length);
  const inputErrors = run.inputErrors ?? {};
  const title = data.title || def?.display_name || data.type;
  const progress = run.progress;

  return (
    <div
      data-testid="node"
      data-node-id={id}
      data-node-type={data.type}
      data-state={run.state}
      data-mode={data.mode}
      className={`nf-node state-${run.state}${selected ? " selected" : ""}${def ? "" : " unknown"}${compact ? " compact" : ""}${data.mode ? ` mode-${data.mode}` : ""}${collapsed ? " collapsed" : ""}`}
    >
      <div className="nf-title" data-testid="node-title" title={def?.description || data.type}>
        <button
          className="nodrag nf-collapse"
          data-testid="collapse-toggle"
          title={collapsed ? "Expand" : "Collapse"}
          onClick={() => graph.updateData(id, { collapsed: collapsed ? undefined : true })}
        >
          {collapsed ? "▸" : "▾"}
        </button>
        <span className="nf-title-text">{title}</span>
        {run.state === "cached" && <span className="nf-badge cached">cached</span>}
        {run.state === "running" && <span className="nf-badge running">running</span>}
        {run.state === "queued" && <span className="nf-badge queued">queued</span>}
        {data.mode && <span className={`nf-badge mode-${data.mode}`} data-testid="node-mode">{data.mode === "bypass" ? "bypassed" : "muted"}</span>}
        <span className="nf-node-id">#{id}</span>
      </div>
      {progress && (
        <div
          className="nf-progress"
          data-testid="node-progress"
          data-value={progress.value}
          data-max={progress.max}
          title={`${progress.value} / ${progress.max}`}
        >
          <div style={{ width: `${Math.min(100, (100 * progress.value) / (progress.max || 1))}%` }} />
        </div>
      )}
      {!def && <div className="nf-node-error">Unknown node type “{data.type}” (kept as is)</div>}
      {rows > 0 && (
        <div className="nf-sockets">
          {Array.from({ length: rows }, (_, i) => {
            const input = inputs[i];
            const output = outputs[i];
            return (
              <div className="nf-socket-row" key={i}>
                <div className="nf-socket in">
                  {input && (
                    <InputSocket
                      nodeId={id}
                      input={input}
                      hasError={!!inputErrors[input.name]}
                      kept={input.converted ? data.values[input.name] : undefined}
                    />
                  )}
                </div>
                <div className="nf-socket out">
                  {output && (
                    <>
                      <span className="nf-socket-label">{output.name}</span>
                      <Handle
                        type="source"
                        position={Position.Right}
                        id={output.name}
                        data-testid={`out-${output.name}`}
                        className="nf-handle"
                        style={{ background: typeColor(output.type), borderColor: typeColor(output.type) }}
                        title={`${output.name}: ${output.type}`}
                      />
                    </>
                  )}
                </div>
              </div>
            );
          })}
          {inputs
            .filter((input) => inputErrors[input.name])
            .map((input) => (
              <div className="nf-input-error" key={input.name} data-testid={`input-error-${input.name}`}>
                {input.name}: {inputErrors[input.name]}
              </div>
            ))}
        </div>
      )}
      {widgets.length > 0 && compact && !collapsed && (
        <div className="nf-widgets">
          {widgets.map(([name, input]) => (
            <div
              key={name}
              className="nf-widget-placeholder"
              style={{ height: input.schema?.["x-nodeflow"]?.multiline ? 88 : 40 }}
            />
          ))}
        </div>
      )}
      {widgets.length > 0 && !compact && !collapsed && (
        <div className="nf-widgets">
          {widgets.map(([name, input]) => (
            <div className={`nf-widget${inputErrors[name] ? " has-error" : ""}`} key={name}>
              <div className="nf-widget-label" title={input.description || input.schema?.description || `${name}: ${input.type}`}>
                <span>{name}</span>
                {convertible(input) && (
                  <button
                    className="nodrag nf-convert"
                    data-testid={`convert-${name}`}
                    title="Convert to an input socket"
                    onClick={() => graph.toggleConvert(id, name)}
                  >
                    ⇄
                  </button>
                )}
              </div>
              <Widget
                nodeId={id}
                name={name}
                def={choices ? { ...input, schema: { ...input.schema, enum: choices } } : input}
                value={data.values[name]}
                seedMode={data.seedControl[name]}
              />
              {inputErrors[name] && (
                <div className="nf-input-error" data-testid={`input-error-${name}`}>
                  {inputErrors[name]}
                </div>
              )}
            </div>
          ))}
        </div>
      )}
      {Object.keys(inputErrors)
        .filter((name) => !inputs.some((i) => i.name === name) && !widgets.some(([w]) => w === name))
        .map((name) => (
          <div className="nf-input-error" key={name} data-testid={`input-error-${name}`}>
            {name}: {inputErrors[name]}
          </div>
        ))}
      {run.state === "error" && run.error && (
        <div className="nf-node-error" data-testid="node-error">
          {run.error}
          {run.errorDetail && (
            <button className="nodrag nf-small-button" onClick={() => setShowTrace(!showTrace)}>
              {showTrace ? "hide traceback" : "traceback"}
            </button>
          )}
          {showTrace && <pre className="nodrag nowheel nf-trace">{run.errorDetail}</pre>}
        </div>
      )}
      {run.preview && !(run.state === "done" && run.images?.length) && (
        <img className="nf-preview" data-testid="node-preview" src={run.preview} alt="preview" draggable={false} />
      )}
      {run.images && run.images.length > 0 && (
        <div className="nf-images">
          {run.images.map((image) => (
            <a key={`${image.subfolder}/${image.filename}`} href={imageUrl(image)} target="_blank" rel="noreferrer" className="nodrag">
              <img data-testid="node-image" src={imageUrl(image)} alt={image.filename} draggable={false} />
            </a>
          ))}
        </div>
      )}
    </div>
  );
});

export const NoteNodeView = memo(function NoteNodeView({ id, data, selected }: NodeProps<NoteNode>) {
  return (
    <div className={`nf-note${selected ? " selected" : ""}`} data-testid="note">
      <NodeResizer isVisible={selected} minWidth={140} minHeight={60} color="#888" />
      <textarea
        className="nodrag nowheel"
        data-testid="note-text"
        value={data.text}
        placeholder="Note…"
        onChange={(e) => graph.updateData(id, { text: e.target.value }, `note:${id}`)}
      />
    </div>
  );
});

export const GroupNodeView = memo(function GroupNodeView({ id, data, selected }: NodeProps<GroupNode>) {
  const [editing, setEditing] = useState(false);
  return (
    <div className={`nf-group${selected ? " selected" : ""}`} data-testid="group" style={data.color ? { borderColor: data.color } : undefined}>
      <NodeResizer isVisible={selected} minWidth={160} minHeight={100} color="#888" />
      <div className="nf-group-title" onDoubleClick={() => setEditing(true)} style={data.color ? { background: data.color } : undefined}>
        {editing ? (
          <input
            className="nodrag"
            autoFocus
            defaultValue={data.title}
            onBlur={(e) => {
              setEditing(false);
              graph.updateData(id, { title: e.target.value });
            }}
            onKeyDown={(e) => {
              if (e.key === "Enter" || e.key === "Escape") (e.target as HTMLInputElement).blur();
            }}
          />
        ) : (
          data.title
        )}
      </div>
    </div>
  );
});
