// Widgets generated from an input's JSON Schema.
import { memo, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { api, fileUrl, type InputDef } from "../api";
import { graph, SEED_MODES, type SeedMode } from "../graph";
import { runState } from "../runstate";
import { customWidgetName, useCustomWidget, type WidgetRender } from "../extensions";
import { MaskEditor } from "./MaskEditor";

interface WidgetProps {
  nodeId: string;
  name: string;
  def: InputDef;
  value: unknown;
  seedMode?: SeedMode;
}

const CONTROL = "nodrag nowheel nf-control";

export const Widget = memo(function Widget(props: WidgetProps) {
  const { def } = props;
  const schema = def.schema ?? {};
  const x = schema["x-nodeflow"] ?? {};
  const custom = useCustomWidget(customWidgetName(def));
  if (custom) return <ExtensionWidget {...props} plugin={custom.plugin} render={custom.render} />;
  if (Array.isArray(schema.enum)) return <ComboWidget {...props} options={schema.enum} />;
  if (x.files === "input") return <ImageWidget {...props} />;
  if (x.files) return <ModelWidget {...props} kind={x.files} />;
  switch (def.type) {
    case "INT":
    case "FLOAT":
      return <NumberWidget {...props} />;
    case "BOOLEAN":
      return (
        <input
          type="checkbox"
          className={CONTROL}
          data-testid={`widget-${props.name}`}
          checked={!!props.value}
          onChange={(e) => graph.setValue(props.nodeId, props.name, e.target.checked)}
        />
      );
    default:
      return <TextWidget {...props} multiline={!!x.multiline} />;
  }
});

/**
 * A widget drawn by a plugin's editor extension (plain DOM in a container). `render` runs at
 * mount and again (after its cleanup) when the value changes from outside the widget (undo, load,
 * setValue); a value the widget itself reported through onChange does not re-render it.
 */
function ExtensionWidget({ nodeId, name, def, value, plugin, render }: WidgetProps & { plugin: string; render: WidgetRender }) {
  const container = useRef<HTMLDivElement>(null);
  const reported = useRef<{ value: unknown } | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const [generation, setGeneration] = useState(0);
  const valueRef = useRef(value);
  valueRef.current = value;
  const shown = useRef(value);
  useEffect(() => {
    if (Object.is(shown.current, value)) return;
    shown.current = value;
    if (reported.current && Object.is(reported.current.value, value)) return;
    reported.current = null;
    setGeneration((g) => g + 1);
  }, [value]);
  useEffect(() => {
    const el = container.current;
    if (!el) return;
    let cleanup: (() => void) | void = undefined;
    try {
      cleanup = render(el, {
        value: valueRef.current,
        schema: def.schema ?? {},
        nodeId,
        input: name,
        onChange: (next: unknown) => {
          reported.current = { value: next };
          graph.setValue(nodeId, name, next);
        },
      });
      setFailed(null);
    } catch (err) {
      console.error(`nodeflow: widget of plugin ${plugin} failed`, err);
      setFailed((err as Error)?.message ?? String(err));
    }
    return () => {
      try {
        if (typeof cleanup === "function") cleanup();
      } catch (err) {
        console.error(`nodeflow: cleanup of a widget of plugin ${plugin} failed`, err);
      }
      el.replaceChildren();
    };
  }, [render, nodeId, name, def, plugin, generation]);
  return (
    <div
      ref={container}
      className={`${CONTROL} nf-extension-widget${failed ? " invalid" : ""}`}
      data-testid={`widget-${name}`}
      data-plugin={plugin}
      title={failed ? `This widget of plugin ${plugin} failed: ${failed}` : undefined}
    />
  );
}

function TextWidget({ nodeId, name, value, multiline }: WidgetProps & { multiline: boolean }) {
  const text = value === undefined || value === null ? "" : String(value);
  if (multiline) {
    return (
      <textarea
        className={`${CONTROL} nf-textarea`}
        data-testid={`widget-${name}`}
        value={text}
        rows={4}
        spellCheck={false}
        onChange={(e) => graph.setValue(nodeId, name, e.target.value)}
      />
    );
  }
  return (
    <input
      type="text"
      className={CONTROL}
      data-testid={`widget-${name}`}
      value={text}
      spellCheck={false}
      onChange={(e) => graph.setValue(nodeId, name, e.target.value)}
    />
  );
}

function ComboWidget({ nodeId, name, value, options }: WidgetProps & { options: unknown[] }) {
  const index = options.findIndex((o) => o === value);
  return (
    <select
      className={CONTROL}
      data-testid={`widget-${name}`}
      value={index >= 0 ? String(options[index]) : String(value ?? "")}
      onChange={(e) => {
        const chosen = options.find((o) => String(o) === e.target.value);
        graph.setValue(nodeId, name, chosen ?? e.target.value);
      }}
    >
      {index < 0 && <option value={String(value ?? "")}>{String(value ?? "")}</option>}
      {options.map((o) => (
        <option key={String(o)} value={String(o)}>
          {String(o)}
        </option>
      ))}
    </select>
  );
}

function numberRange(def: InputDef) {
  const s = def.schema ?? {};
  const min = typeof s.minimum === "number" ? s.minimum : typeof s.exclusiveMinimum === "number" ? s.exclusiveMinimum : undefined;
  const max = typeof s.maximum === "number" ? s.maximum : typeof s.exclusiveMaximum === "number" ? s.exclusiveMaximum : undefined;
  const x = s["x-nodeflow"] ?? {};
  const step = x.step ?? s.multipleOf ?? (def.type === "INT" ? 1 : 0.01);
  return { min, max, step, display: x.display };
}

function NumberWidget({ nodeId, name, def, value, seedMode }: WidgetProps) {
  const { min, max, step, display } = numberRange(def);
  const isInt = def.type === "INT";
  const num = typeof value === "number" ? value : Number(value);
  const [text, setText] = useState(() => (value === undefined || value === null ? "" : String(value)));
  const focused = useRef(false);
  useEffect(() => {
    // follow outside changes (undo, seed control, load) unless the text already means the value
    if (Number(text) !== num || text.trim() === "") {
      if (!focused.current || Number(text) !== num) setText(value === undefined || value === null ? "" : String(value));
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [value]);
  const commit = (raw: string) => {
    setText(raw);
    if (raw.trim() === "") return;
    const n = Number(raw);
    if (!Number.isFinite(n)) return;
    graph.setValue(nodeId, name, isInt && Number.isInteger(n) ? n : n);
  };
  const invalid =
    !Number.isFinite(num) ||
    (min !== undefined && num < min) ||
    (max !== undefined && num > max) ||
    (isInt && !Number.isInteger(num));
  const seed = !!def.schema?.["x-nodeflow"]?.seed;
  const slider =
    !seed &&
    display !== "number" &&
    min !== undefined &&
    max !== undefined &&
    (display === "slider" || (isInt ? max - min <= 256 : max - min <= 100));
  return (
    <div className="nf-number">
      <input
        type="number"
        className={`${CONTROL}${invalid ? " invalid" : ""}`}
        data-testid={`widget-${name}`}
        value={text}
        min={min}
        max={max}
        step={step}
        aria-invalid={invalid}
        onFocus={() => (focused.current = true)}
        onBlur={() => {
          focused.current = false;
          if (String(num) !== text && Number.isFinite(num)) setText(String(num));
        }}
        onChange={(e) => commit(e.target.value)}
      />
      {slider && (
        <input
          type="range"
          className={`${CONTROL} nf-slider`}
          data-testid={`slider-${name}`}
          min={min}
          max={max}
          step={isInt ? Math.max(1, Number(step)) : Number(step) || (max! - min!) / 100}
          value={Number.isFinite(num) ? num : min}
          onChange={(e) => commit(e.target.value)}
          tabIndex={-1}
        />
      )}
      {seed && (
        <select
          className={`${CONTROL} nf-seed-mode`}
          data-testid={`seed-control-${name}`}
          value={seedMode ?? "fixed"}
          title="What to do with the seed after each queued run"
          onChange={(e) => graph.setSeedMode(nodeId, name, e.target.value as SeedMode)}
        >
          {SEED_MODES.map((m) => (
            <option key={m} value={m}>
              {m}
            </option>
          ))}
        </select>
      )}
    </div>
  );
}

// --- model pickers ---------------------------------------------------------------------

const modelLists = new Map<string, string[]>();
const modelFetches = new Map<string, Promise<void>>();
const modelListeners = new Set<() => void>();
let modelVersion = 0;

export function refreshModels(kind: string, force = false): Promise<void> {
  if (!force && modelFetches.has(kind)) return modelFetches.get(kind)!;
  const p = api
    .models(kind)
    .then((r) => {
      modelLists.set(kind, r.models);
    })
    .catch(() => {
      modelLists.set(kind, modelLists.get(kind) ?? []);
    })
    .finally(() => {
      modelVersion++;
      for (const l of modelListeners) l();
    });
  modelFetches.set(kind, p);
  return p;
}

function useModels(kind: string): string[] | undefined {
  useSyncExternalStore(
    (l) => {
      modelListeners.add(l);
      return () => modelListeners.delete(l);
    },
    () => modelVersion,
  );
  useEffect(() => {
    void refreshModels(kind);
  }, [kind]);
  return modelLists.get(kind);
}

function ModelWidget({ nodeId, name, def, value, kind }: WidgetProps & { kind: string }) {
  const models = useModels(kind);
  const current = value === undefined || value === null ? "" : String(value);
  const options = [...(models ?? [])];
  if (current && !options.includes(current)) options.unshift(current);
  const lastRefresh = useRef(0);
  return (
    <div className="nf-row-control">
      <select
        className={CONTROL}
        data-testid={`widget-${name}`}
        value={current}
        title={`models/${kind}`}
        onMouseDown={() => {
          if (Date.now() - lastRefresh.current > 5000) {
            lastRefresh.current = Date.now();
            void refreshModels(kind, true);
          }
        }}
        onChange={(e) => graph.setValue(nodeId, name, e.target.value)}
      >
        {(!current || !def.required) && <option value="">{def.required ? "— choose —" : "(none)"}</option>}
        {options.map((m) => (
          <option key={m} value={m}>
            {m}
          </option>
        ))}
      </select>
      {models && models.length === 0 && !current && <span className="nf-hint">no files in models/{kind}</span>}
    </div>
  );
}

// --- image picker (LoadImage) ---------------------------------------------------------

const uploaded: string[] = [];

export async function uploadImage(file: Blob, filename: string): Promise<string> {
  const { name } = await api.upload(file, filename);
  if (!uploaded.includes(name)) uploaded.push(name);
  return name;
}

function ImageWidget({ nodeId, name, value }: WidgetProps) {
  const current = value === undefined || value === null ? "" : String(value);
  const fileInput = useRef<HTMLInputElement>(null);
  const [broken, setBroken] = useState(false);
  const [busy, setBusy] = useState(false);
  const [masking, setMasking] = useState(false);
  useEffect(() => setBroken(false), [current]);
  const listId = `uploads-${nodeId}-${name}`;
  return (
    <div className="nf-image-widget">
      <div className="nf-row-control">
        <input
          type="text"
          className={CONTROL}
          data-testid={`widget-${name}`}
          value={current}
          list={listId}
          placeholder="file in ./input"
          spellCheck={false}
          onChange={(e) => graph.setValue(nodeId, name, e.target.value)}
        />
        <datalist id={listId}>
          {uploaded.map((u) => (
            <option key={u} value={u} />
          ))}
        </datalist>
        <button
          className="nodrag nf-small-button"
          data-testid={`upload-${name}`}
          title="Upload an image"
          disabled={busy}
          onClick={() => fileInput.current?.click()}
        >
          {busy ? "…" : "upload"}
        </button>
        <button
          className="nodrag nf-small-button"
          data-testid={`edit-mask-${name}`}
          title="Edit the mask: paint where the picture becomes transparent (LoadImage's mask)"
          disabled={!current || broken}
          onClick={() => setMasking(true)}
        >
          mask
        </button>
        <input
          ref={fileInput}
          type="file"
          accept="image/*"
          hidden
          data-testid={`upload-input-${name}`}
          onChange={async (e) => {
            const file = e.target.files?.[0];
            e.target.value = "";
            if (!file) return;
            setBusy(true);
            try {
              graph.setValue(nodeId, name, await uploadImage(file, file.name));
            } catch (err) {
              runState.setBanner(`Upload failed: ${(err as Error).message}`);
            } finally {
              setBusy(false);
            }
          }}
        />
      </div>
      {current && !broken && (
        <img
          className="nf-input-image"
          data-testid={`input-image-${name}`}
          src={fileUrl("input", current)}
          alt={current}
          onError={() => setBroken(true)}
        />
      )}
      {masking && current && (
        <MaskEditor
          filename={current}
          upload={uploadImage}
          onSaved={(saved) => graph.setValue(nodeId, name, saved)}
          onClose={() => setMasking(false)}
        />
      )}
    </div>
  );
}
