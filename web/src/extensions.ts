// Editor extensions of plugins (`nodeflow_web_extensions`): GET /api/extensions lists each
// plugin's scripts and styles under /extensions/<plugin>/; each script is imported as an ES module
// (the page's CSP allows only same-origin scripts, so no inline code) and, when it exports
// `register(api)`, called with the extension API below. A script that fails to load or throws in
// register shows a notice naming the plugin; the editor goes on without it.
import { useSyncExternalStore } from "react";
import type { InputDef, JsonSchema } from "./api";
import { runState } from "./runstate";

/** What a widget's render function is given. */
export interface WidgetContext {
  /** The input's current value (undefined: not set, the default applies). */
  value: unknown;
  /** The input's JSON Schema (its `x-nodeflow` hints included). */
  schema: JsonSchema;
  /** Store a new value (undoable, saved with the workflow, sent when queued). */
  onChange: (value: unknown) => void;
  /** The node's id in the workflow. */
  nodeId: string;
  /** The input's name. */
  input: string;
}

/** Draws a widget into `container` (plain DOM); may return a cleanup function. */
export type WidgetRender = (container: HTMLElement, context: WidgetContext) => (() => void) | void;

/** The object an extension module's `register(api)` receives. */
export interface ExtensionApi {
  /** The extension API version: 1. */
  readonly version: 1;
  /** The plugin this module belongs to. */
  readonly plugin: string;
  /** Draw widget inputs whose schema has `"x-nodeflow": {"widget": name}` with `render`. */
  registerWidget(name: string, render: WidgetRender): void;
  /** Call `handler(event)` for each websocket event of this type (`"*"`: every event). */
  on(eventType: string, handler: (event: Record<string, unknown>) => void): () => void;
  /** Show a notice in the editor (prefixed with the plugin's name). */
  notify(message: string, kind?: "info" | "warning" | "error"): void;
}

export const EXTENSION_API_VERSION = 1;

export interface ExtensionStatus {
  plugin: string;
  url: string;
  kind: "script" | "style";
  ok: boolean;
  error?: string;
}

// --- widgets ---------------------------------------------------------------------------------

const widgets = new Map<string, { plugin: string; render: WidgetRender }>();
const widgetListeners = new Set<() => void>();
let widgetVersion = 0;

function registerWidget(plugin: string, name: string, render: WidgetRender) {
  if (typeof name !== "string" || !name) throw new TypeError("registerWidget: the name must be a non-empty string");
  if (typeof render !== "function") throw new TypeError(`registerWidget(${JSON.stringify(name)}): render must be a function`);
  const existing = widgets.get(name);
  if (existing && existing.plugin !== plugin) {
    runState.addNotice(
      "warning",
      `Plugin ${plugin} registers the widget "${name}", already registered by plugin ${existing.plugin}; the later one is used.`,
    );
  }
  widgets.set(name, { plugin, render });
  widgetVersion++;
  for (const l of widgetListeners) l();
}

/** The widget name an input asks for (`"x-nodeflow": {"widget": ...}`), if any. */
export function customWidgetName(def: InputDef): string | undefined {
  const name = (def.schema?.["x-nodeflow"] as { widget?: unknown } | undefined)?.widget;
  return typeof name === "string" && name ? name : undefined;
}

/** The registered render function for a widget name (re-renders when extensions register). */
export function useCustomWidget(name: string | undefined): { plugin: string; render: WidgetRender } | undefined {
  useSyncExternalStore(
    (l) => {
      widgetListeners.add(l);
      return () => widgetListeners.delete(l);
    },
    () => widgetVersion,
  );
  return name ? widgets.get(name) : undefined;
}

// --- events ----------------------------------------------------------------------------------

const eventHandlers = new Map<string, Set<{ plugin: string; handler: (e: Record<string, unknown>) => void }>>();

/** Hand a websocket event to the extensions' handlers (runstate calls this for each event). */
export function dispatchExtensionEvent(event: Record<string, unknown>) {
  if (!eventHandlers.size) return;
  const type = typeof event.type === "string" ? event.type : "";
  for (const key of [type, "*"]) {
    for (const entry of eventHandlers.get(key) ?? []) {
      try {
        entry.handler(event);
      } catch (err) {
        console.error(`nodeflow extension of plugin ${entry.plugin}: handler for ${key} failed`, err);
      }
    }
  }
}

runState.tapEvents(dispatchExtensionEvent);

// --- loading ---------------------------------------------------------------------------------

const statuses: ExtensionStatus[] = [];
let loaded = false;

/** What was loaded (for window.nodeflow.extensions()). */
export function extensionStatus(): { loaded: boolean; items: ExtensionStatus[] } {
  return { loaded, items: statuses.map((s) => ({ ...s })) };
}

function makeApi(plugin: string): ExtensionApi {
  return Object.freeze({
    version: EXTENSION_API_VERSION as 1,
    plugin,
    registerWidget: (name: string, render: WidgetRender) => registerWidget(plugin, name, render),
    on: (eventType: string, handler: (e: Record<string, unknown>) => void) => {
      if (typeof handler !== "function") throw new TypeError("on: the handler must be a function");
      const entry = { plugin, handler };
      let set = eventHandlers.get(eventType);
      if (!set) eventHandlers.set(eventType, (set = new Set()));
      set.add(entry);
      return () => void eventHandlers.get(eventType)?.delete(entry);
    },
    notify: (message: string, kind: "info" | "warning" | "error" = "info") =>
      runState.addNotice(["info", "warning", "error"].includes(kind) ? kind : "info", `${plugin}: ${String(message)}`),
  });
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

function addStyle(plugin: string, url: string) {
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = url;
  link.dataset.nodeflowPlugin = plugin;
  const status: ExtensionStatus = { plugin, url, kind: "style", ok: true };
  link.onerror = () => {
    status.ok = false;
    status.error = "could not be loaded";
    runState.addNotice("warning", `Plugin ${plugin}: the editor extension stylesheet ${url} could not be loaded.`);
  };
  statuses.push(status);
  document.head.appendChild(link);
}

async function loadScript(plugin: string, url: string) {
  const status: ExtensionStatus = { plugin, url, kind: "script", ok: false };
  statuses.push(status);
  let module: { register?: unknown };
  try {
    module = (await import(/* @vite-ignore */ url)) as { register?: unknown };
  } catch (err) {
    status.error = describe(err);
    runState.addNotice("error", `Plugin ${plugin}: its editor extension ${url} failed to load: ${status.error}`, String((err as Error)?.stack ?? ""));
    return;
  }
  if (typeof module.register === "function") {
    try {
      await (module.register as (api: ExtensionApi) => unknown)(makeApi(plugin));
    } catch (err) {
      status.error = describe(err);
      runState.addNotice("error", `Plugin ${plugin}: its editor extension ${url} failed in register(): ${status.error}`, String((err as Error)?.stack ?? ""));
      return;
    }
  }
  status.ok = true;
}

interface ExtensionListing {
  plugin: string;
  base?: string;
  scripts?: string[];
  styles?: string[];
}

/** Load every plugin's editor extension; never throws (problems become notices). */
export async function loadExtensions(): Promise<void> {
  try {
    let listing: ExtensionListing[] = [];
    try {
      const response = await fetch("/api/extensions");
      if (response.status === 404) return; // a server without extension support
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = (await response.json()) as { extensions?: ExtensionListing[] };
      listing = Array.isArray(body?.extensions) ? body.extensions : [];
    } catch (err) {
      runState.addNotice("warning", `Could not list the plugins' editor extensions: ${describe(err)}`);
      return;
    }
    for (const ext of listing) {
      const plugin = String(ext?.plugin ?? "?");
      for (const url of ext.styles ?? []) addStyle(plugin, url);
    }
    // one plugin's scripts in their order; plugins side by side
    await Promise.all(
      listing.map(async (ext) => {
        const plugin = String(ext?.plugin ?? "?");
        for (const url of ext.scripts ?? []) await loadScript(plugin, url);
      }),
    );
  } finally {
    loaded = true;
  }
}
