// The node and type catalog from /api/nodes and /api/types, and the type rules the server uses.
import type { InputDef, NodeDef, TypeDef } from "./api";

export const PRIMITIVES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN"]);

/** A loaded plugin as /api/system lists it. */
export interface PluginDef {
  name: string;
  distribution: string;
  version: string;
  builtin: boolean;
}

export interface Catalog {
  nodes: Record<string, NodeDef>;
  types: Record<string, TypeDef>;
  plugins: Record<string, PluginDef>;
}

export const catalog: Catalog = { nodes: {}, types: {}, plugins: {} };

export function setPlugins(plugins: PluginDef[]) {
  catalog.plugins = Object.fromEntries(plugins.map((p) => [p.name, p]));
}

/**
 * The plugins (distribution and version) a workflow's node types come from, as the server's
 * `nodeflow.provenance.requirements` computes them: a plugin not loaded here keeps what the file
 * recorded, so opening and saving a workflow never loses that information.
 */
export function requirements(
  types: Iterable<string>,
  recorded: Record<string, unknown> | undefined,
): Record<string, { distribution: string; version: string }> {
  const found: Record<string, { distribution: string; version: string }> = {};
  for (const type of types) {
    const plugin = (catalog.nodes[type] as { plugin?: string } | undefined)?.plugin ??
      (type.includes(".") ? type.slice(0, type.lastIndexOf(".")) : undefined);
    if (!plugin) continue;
    const info = catalog.plugins[plugin];
    if (info && !info.builtin) {
      found[plugin] = { distribution: info.distribution, version: info.version };
    } else if (!info && recorded && plugin in recorded) {
      found[plugin] = recorded[plugin] as { distribution: string; version: string };
    }
  }
  return Object.fromEntries(Object.entries(found).sort(([a], [b]) => (a < b ? -1 : 1)));
}

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
