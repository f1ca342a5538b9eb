// Primitive nodes (the pack's "primitives" category: Int, Float, String, Boolean, Seed, Combo):
// one value, linked into widgets turned into inputs. Like ComfyUI's, a primitive takes the value
// of the first widget it is linked to, and a Combo offers that widget's choices.
import type { Edge } from "@xyflow/react";
import type { InputDef } from "./api";
import { catalog } from "./catalog";
import type { AnyNode, NfNode } from "./graph";

export function isPrimitive(type: string): boolean {
  return catalog.nodes[type]?.category === "primitives";
}

/** The primitive's one widget. */
function valueInput(type: string): [string, InputDef] | undefined {
  return Object.entries(catalog.nodes[type]?.inputs ?? {}).find(([, i]) => i.kind === "widget");
}

function targetInput(nodes: AnyNode[], edge: Edge): [NfNode, InputDef] | undefined {
  const target = nodes.find((n) => n.id === edge.target);
  if (target?.type !== "nf") return undefined;
  const input = catalog.nodes[target.data.type]?.inputs[edge.targetHandle ?? ""];
  return input ? [target, input] : undefined;
}

/** After `edge` was added: a primitive linked for the first time takes the target's value. */
export function adoptTargetValue(nodes: AnyNode[], edges: Edge[], edge: Edge): AnyNode[] {
  const source = nodes.find((n) => n.id === edge.source);
  if (source?.type !== "nf" || !isPrimitive(source.data.type)) return nodes;
  if (edges.some((e) => e.source === source.id && e.id !== edge.id)) return nodes;
  const own = valueInput(source.data.type);
  const target = targetInput(nodes, edge);
  if (!own || !target) return nodes;
  const value = target[0].data.values[edge.targetHandle!] ?? target[1].default ?? target[1].schema?.default;
  if (value === undefined || typeof value !== typeof (own[1].default ?? own[1].schema?.default ?? value)) {
    return nodes;
  }
  const values = { ...source.data.values, [own[0]]: value };
  return nodes.map((n) => (n.id === source.id ? ({ ...n, data: { ...source.data, values } } as AnyNode) : n));
}

/** The choices of the first choice widget a primitive feeds (as JSON, so a store snapshot). */
export function targetChoicesKey(nodes: AnyNode[], edges: Edge[], nodeId: string): string {
  for (const edge of edges) {
    if (edge.source !== nodeId) continue;
    const options = targetInput(nodes, edge)?.[1].schema?.enum;
    if (Array.isArray(options)) return JSON.stringify(options);
  }
  return "";
}
