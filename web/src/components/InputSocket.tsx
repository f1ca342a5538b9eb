// One input socket of a node: its handle and label, the ⇄ of a widget converted to a socket, and
// the value such a widget keeps (and sends) until a link replaces it.
//
// Dragging from a connected input picks up its link, as in ComfyUI: the link's end follows the
// mouse from its source, dropped on another input it moves there, dropped on nothing it is
// removed. React Flow would start a new connection from the input instead, so the mouse-down is
// handed to the link's own reconnect anchor (App.tsx's onReconnect* do the rest).
import { Handle, Position, useNodeConnections } from "@xyflow/react";
import { memo } from "react";
import { typeColor } from "../catalog";
import { graph } from "../graph";

export interface SocketRow {
  name: string;
  type: string;
  converted?: boolean;
  required?: boolean;
}

export const InputSocket = memo(function InputSocket({
  nodeId,
  input,
  hasError,
  kept,
}: {
  nodeId: string;
  input: SocketRow;
  hasError: boolean;
  /** A converted widget's value (undefined for a plain socket). */
  kept?: unknown;
}) {
  const links = useNodeConnections({ handleType: "target", handleId: input.name });
  const link = links[0]?.edgeId;
  const color = typeColor(input.type);
  return (
    <>
      <Handle
        type="target"
        position={Position.Left}
        id={input.name}
        data-testid={`in-${input.name}`}
        data-linked={link ? "true" : "false"}
        className="nf-handle"
        style={{ background: color, borderColor: color }}
        title={`${input.name}: ${input.type}${input.required ? "" : " (optional)"}${link ? " (drag to move or detach the link)" : ""}`}
        onMouseDownCapture={link ? (e) => pickUpLink(e, link) : undefined}
      />
      <span className={`nf-socket-label${hasError ? " has-error" : ""}`}>{input.name}</span>
      {input.converted && !link && kept !== undefined && kept !== "" && (
        <span className="nf-kept-value" data-testid={`kept-${input.name}`} title="The widget's value: sent until a link replaces it">
          = {typeof kept === "string" ? kept : JSON.stringify(kept)}
        </span>
      )}
      {input.converted && (
        <button
          className="nodrag nf-convert"
          data-testid={`convert-${input.name}`}
          title="Convert back to a widget"
          onClick={() => graph.toggleConvert(nodeId, input.name)}
        >
          ⇄
        </button>
      )}
    </>
  );
});

function pickUpLink(e: React.MouseEvent, edgeId: string) {
  if (e.button !== 0) return;
  e.stopPropagation(); // React Flow's handle would start a new connection from this input
  e.preventDefault();
  const anchor = document.querySelector(
    `.react-flow__edge[data-id="${CSS.escape(edgeId)}"] .react-flow__edgeupdater-target`,
  );
  if (!anchor) {
    graph.removeEdge(edgeId); // the link is not drawn (off screen in a big graph): detach it
    return;
  }
  anchor.dispatchEvent(
    new MouseEvent("mousedown", { bubbles: true, cancelable: true, clientX: e.clientX, clientY: e.clientY, button: 0, view: window }),
  );
}
