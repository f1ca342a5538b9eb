// The node and type catalog from /api/nodes and /api/types, and the type rules the server uses.
import type { InputDef, NodeDef, TypeDef } from "./api";

export const PRIMITIVES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN"]);

export interface Catalog {
  nodes: Record<string, NodeDef>;
  types: Record<string, TypeDef>;
}

export const catalog: Catalog = { nodes: {}, types: {} };

const ancestorCache = new Map<string, Set<string>>();

export function setCatalog(nodes: Record<string, NodeDef>, types: Record<string, TypeDef>) {
  catalog.nodes = nodes;
  catalog.types = types;
  ancestorCache.clear();
}

/** Every transitive parent of a type (not the type itself). */
export function ancestors(name: string): Set<string> {
  const cached = ancestorCache.get(name);
  if (cached) return cached;
  const seen = new Set<string>();
  const stack = [...(catalog.types[name]?.parents ?? [])];
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push(...(catalog.types[t]?.parents ?? []));
  }
  ancestorCache.set(name, seen);
  return seen;
}

/** Mirrors nodeflow.types.TypeRegistry.compatible. */
export function compatible(outputType: string, inputType: string): boolean {
  if (outputType === "*" || inputType === "*" || outputType === inputType) return true;
  if (outputType === "INT" && inputType === "FLOAT") return true;
  return ancestors(outputType).has(inputType);
}

export function typeColor(name: string | undefined): string {
  if (!name) return "#888";
  return catalog.types[name]?.color ?? "#9e9e9e";
}

/** Whether a widget can become an input socket (its type is a primitive). */
export function convertible(def: InputDef): boolean {
  return def.kind === "widget" && PRIMITIVES.has(def.type);
}

export function defaultValue(def: InputDef): unknown {
  if (def.default !== undefined) return def.default;
  const schema = def.schema ?? {};
  if (schema.default !== undefined) return schema.default;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  switch (def.type) {
    case "INT":
    case "FLOAT":
      return typeof schema.minimum === "number" ? Math.max(0, schema.minimum) : 0;
    case "BOOLEAN":
      return false;
    default:
      return "";
  }
}

export function isSeed(def: InputDef | undefined): boolean {
  return !!def?.schema?.["x-nodeflow"]?.seed;
}
