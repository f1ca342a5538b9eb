// A link, drawn through its reroute points (`ui.reroutes`): double-click the link to add a point
// there, drag a point to move it, double-click a point to remove it.
import { BaseEdge, EdgeLabelRenderer, getBezierPath, useReactFlow, type EdgeProps, type XYPosition } from "@xyflow/react";
import { memo } from "react";
import { graph } from "../graph";

/** Smooth curves leaving and entering each point horizontally, as links leave and enter sockets. */
function pathThrough(points: XYPosition[]): string {
  let d = `M ${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const dx = Math.max(30, Math.abs(b.x - a.x) / 2);
    d += ` C ${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x},${b.y}`;
  }
  return d;
}

/** Where a new point goes: the index that lengthens the polyline least. */
function insertAt(route: XYPosition[], p: XYPosition): number {
  const dist = (a: XYPosition, b: XYPosition) => Math.hypot(a.x - b.x, a.y - b.y);
  let best = 1;
  let cost = Infinity;
  for (let i = 1; i < route.length; i++) {
    const added = dist(route[i - 1], p) + dist(p, route[i]) - dist(route[i - 1], route[i]);
    if (added < cost) [best, cost] = [i, added];
  }
  return best - 1; // an index into the points, which leave out the source at route[0]
}

export const RerouteEdge = memo(function RerouteEdge(props: EdgeProps) {
  const { id, sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition, data, style, markerEnd, interactionWidth } = props;
  const rf = useReactFlow();
  const points = (data?.points as XYPosition[] | undefined) ?? [];
  const route = [{ x: sourceX, y: sourceY }, ...points, { x: targetX, y: targetY }];
  const path = points.length
    ? pathThrough(route)
    : getBezierPath({ sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition })[0];
  const at = (e: { clientX: number; clientY: number }) => rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });

  return (
    <>
      <g
        onDoubleClick={(e) => {
          e.stopPropagation();
          const p = at(e);
          const next = [...points];
          next.splice(insertAt(route, p), 0, p);
          graph.setReroutes(id, next);
        }}
      >
        <BaseEdge id={id} path={path} style={style} markerEnd={markerEnd} interactionWidth={interactionWidth ?? 20} />
      </g>
      {points.length > 0 && (
        <EdgeLabelRenderer>
          {points.map((p, i) => (
            <div
              key={i}
              className="nodrag nopan nf-reroute"
              data-testid="reroute"
              data-edge={id}
              title="Drag to move; double-click to remove"
              style={{ transform: `translate(-50%, -50%) translate(${p.x}px, ${p.y}px)`, borderColor: String(style?.stroke ?? "#aaa") }}
              onPointerDown={(e) => {
                e.stopPropagation();
                (e.target as HTMLElement).setPointerCapture(e.pointerId);
              }}
              onPointerMove={(e) => {
                if (!(e.target as HTMLElement).hasPointerCapture(e.pointerId)) return;
                const next = [...points];
                next[i] = at(e);
                graph.setReroutes(id, next, `reroute:${id}:${i}`);
              }}
              onPointerUp={(e) => (e.target as HTMLElement).releasePointerCapture(e.pointerId)}
              onDoubleClick={(e) => {
                e.stopPropagation();
                graph.setReroutes(id, points.filter((_, j) => j !== i));
              }}
            />
          ))}
        </EdgeLabelRenderer>
      )}
    </>
  );
});
