// Align and distribute the selected nodes (menu and Alt+Shift shortcuts). Sizes are the drawn
// ones (React Flow's measurements), so "align right" lines up right edges of unequal nodes.
import type { XYPosition } from "@xyflow/react";
import { graph, type AnyNode } from "./graph";

export type Alignment = "left" | "right" | "top" | "bottom" | "center" | "middle";
export type Axis = "horizontal" | "vertical";

interface Box {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

function box(n: AnyNode): Box {
  return {
    id: n.id,
    x: n.position.x,
    y: n.position.y,
    w: n.measured?.width ?? n.width ?? 240,
    h: n.measured?.height ?? n.height ?? 120,
  };
}

/** The selected nodes (groups move their children themselves: they are left out). */
function selectedBoxes(): Box[] {
  return graph.state.nodes.filter((n) => n.selected && n.type !== "group").map(box);
}

function apply(moves: Map<string, XYPosition>) {
  if (!moves.size) return;
  graph.checkpoint();
  graph.moveNodes(moves);
}

/** Line up the selection's edges (left, right, top, bottom) or centres (center: a vertical
 * line, middle: a horizontal one) on the outermost node's. Needs two nodes. */
export function alignSelected(how: Alignment): boolean {
  const boxes = selectedBoxes();
  if (boxes.length < 2) return false;
  const left = Math.min(...boxes.map((b) => b.x));
  const right = Math.max(...boxes.map((b) => b.x + b.w));
  const top = Math.min(...boxes.map((b) => b.y));
  const bottom = Math.max(...boxes.map((b) => b.y + b.h));
  const moves = new Map<string, XYPosition>();
  for (const b of boxes) {
    const at: XYPosition = { x: b.x, y: b.y };
    if (how === "left") at.x = left;
    if (how === "right") at.x = right - b.w;
    if (how === "center") at.x = (left + right) / 2 - b.w / 2;
    if (how === "top") at.y = top;
    if (how === "bottom") at.y = bottom - b.h;
    if (how === "middle") at.y = (top + bottom) / 2 - b.h / 2;
    moves.set(b.id, at);
  }
  apply(moves);
  return true;
}

/** Equal gaps between the selected nodes along an axis, the two outermost staying where they
 * are. Needs three nodes. */
export function distributeSelected(axis: Axis): boolean {
  const boxes = selectedBoxes();
  if (boxes.length < 3) return false;
  const horizontal = axis === "horizontal";
  const start = (b: Box) => (horizontal ? b.x : b.y);
  const size = (b: Box) => (horizontal ? b.w : b.h);
  boxes.sort((a, b) => start(a) - start(b) || a.id.localeCompare(b.id));
  const first = boxes[0];
  const last = boxes.reduce((a, b) => (start(b) + size(b) > start(a) + size(a) ? b : a));
  const span = start(last) + size(last) - start(first);
  const gap = (span - boxes.reduce((sum, b) => sum + size(b), 0)) / (boxes.length - 1);
  const moves = new Map<string, XYPosition>();
  let cursor = start(first);
  for (const b of boxes) {
    moves.set(b.id, horizontal ? { x: cursor, y: b.y } : { x: b.x, y: cursor });
    cursor += size(b) + gap;
  }
  apply(moves);
  return true;
}

/** Alt+Shift+arrows align (left, right, top, bottom), Alt+Shift+H / V distribute. Returns
 * whether the key was one of them. */
export function layoutShortcut(e: KeyboardEvent): boolean {
  if (!e.altKey || !e.shiftKey || e.ctrlKey || e.metaKey) return false;
  const align: Record<string, Alignment> = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "top", ArrowDown: "bottom" };
  if (align[e.code]) alignSelected(align[e.code]);
  else if (e.code === "KeyH") distributeSelected("horizontal");
  else if (e.code === "KeyV") distributeSelected("vertical");
  else return false;
  return true;
}
