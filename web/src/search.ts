// Node search: ranks the catalog for a query. A node is found by its type, its display name or
// an alias its plugin declared (`@node(aliases=...)`: ComfyUI's "KSampler" finds Denoise), and
// forgivingly: by prefix, by initials ("eli" for EmptyLatentImage), by letters in order ("vdec"),
// with a typo or two ("denoize"), or, failing those, by words of its category or description.
import type { NodeDef } from "./api";
import { catalog } from "./catalog";
import { INTERNAL } from "./subgraphdefs";

const flat = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, "");

/** "CLIPTextEncode" -> "cte", "LoadLoRA" -> "ll", "EmptyLatentImage" -> "eli". */
function initials(name: string): string {
  const words = name.replace(/^[^.]*\./, "").match(/[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z]+/g) ?? [];
  return words.map((w) => w[0]).join("").toLowerCase();
}

/** Levenshtein distance, giving up (returning max + 1) once it is past `max`. */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      best = Math.min(best, row[j]);
    }
    if (best > max) return max + 1;
    prev = row;
  }
  return prev[b.length];
}

/** Letters of `q` in order in `s`: a score in [0, 1) growing with the gaps, or -1. */
function subsequence(q: string, s: string): number {
  let at = -1;
  let gaps = 0;
  for (const ch of q) {
    const next = s.indexOf(ch, at + 1);
    if (next < 0) return -1;
    if (at >= 0) gaps += next - at - 1;
    at = next;
  }
  return gaps / (gaps + q.length + 1);
}

/** How well one name matches a flattened query: lower is better, null for no match. */
function nameScore(q: string, name: string): number | null {
  const n = flat(name);
  if (!n) return null;
  if (n === q) return 0;
  if (n.startsWith(q)) return 1;
  if (q.length >= 2 && initials(name) === q) return 1.5;
  if (n.includes(q)) return 2;
  if (q.length >= 2 && initials(name).startsWith(q)) return 2.5;
  const gap = q.length >= 3 ? subsequence(q, n) : -1;
  // A name that starts where the query starts ranks first among in-order matches ("schedulr":
  // Scheduler before ComfyScheduler).
  if (gap >= 0 && gap < 0.5) return 3 + gap + (n[0] === q[0] ? 0 : 0.05);
  if (q.length >= 4) {
    const max = q.length >= 7 ? 2 : 1;
    const d = Math.min(distance(q, n, max), distance(q, n.slice(0, q.length), max));
    if (d <= max) return 3.5 + d / 10;
  }
  return null;
}

export interface Ranked {
  def: NodeDef;
  /** The alias the query matched better than the node's own names, if any. */
  alias?: string;
}

export function searchNodes(query: string, filter?: (def: NodeDef) => boolean): Ranked[] {
  const q = flat(query);
  const words = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const scored: [number, Ranked][] = [];
  for (const def of Object.values(catalog.nodes)) {
    if (def.category === INTERNAL) continue; // an open subgraph's inputs/outputs: not addable
    if (filter && !filter(def)) continue;
    if (!q) {
      scored.push([5, { def }]);
      continue;
    }
    let best: number | null = null;
    let alias: string | undefined;
    for (const name of [def.type, def.display_name || def.type, ...(def.aliases ?? [])]) {
      const s = nameScore(q, name);
      if (s === null || (best !== null && s >= best)) continue;
      best = s;
      alias = name === def.type || name === def.display_name ? undefined : name;
    }
    if (best === null) {
      const hay = `${def.type} ${def.display_name} ${def.category} ${def.plugin} ${def.description}`.toLowerCase();
      if (!words.every((w) => hay.includes(w))) continue;
      best = 4;
    }
    scored.push([best, { def, alias }]);
  }
  scored.sort(
    (a, b) =>
      a[0] - b[0] || a[1].def.category.localeCompare(b[1].def.category) || a[1].def.type.localeCompare(b[1].def.type),
  );
  return scored.map(([, r]) => r);
}

export function rankNodes(query: string, filter?: (def: NodeDef) => boolean): NodeDef[] {
  return searchNodes(query, filter).map((r) => r.def);
}
