// The mask editor: paint over an input picture (LoadImage's), save the mask into the picture's
// alpha as a new upload. Painted = transparent, so LoadImage's mask (1 - alpha) is 1 there.
import { useCallback, useEffect, useRef, useState } from "react";
import { createPortal } from "react-dom";
import { fileUrl } from "../api";
import { decodePngRgba, encodePngRgba } from "../pngpixels";

const INK = "rgb(255, 0, 200)";

interface Pixels {
  width: number;
  height: number;
  /** Not premultiplied: the colour under transparent pixels is kept. */
  rgba: Uint8ClampedArray;
}

/** The picture's pixels: PNGs decoded here (exact), anything else through a canvas. */
async function loadPixels(url: string): Promise<Pixels> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  const blob = await response.blob();
  const decoded = await decodePngRgba(await blob.arrayBuffer());
  if (decoded) return decoded;
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d")!;
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { width: canvas.width, height: canvas.height, rgba: ctx.getImageData(0, 0, canvas.width, canvas.height).data };
}
const HISTORY = 50;

type Tool = "paint" | "erase";

interface Props {
  /** The picture, a file in the input folder. */
  filename: string;
  /** Uploads the masked PNG; resolves to the name the server gave it. */
  upload: (png: Blob, name: string) => Promise<string>;
  onSaved: (name: string) => void;
  onClose: () => void;
}

/** The upload's name: the picture's stem, less an earlier "-masked" (and the server's "_N"), + "-masked.png". */
export function maskedName(filename: string): string {
  const base = filename.split("/").pop() ?? filename;
  const stem = base.replace(/\.[^.]*$/, "").replace(/-masked(_\d+)?$/, "");
  return `${stem || "image"}-masked.png`;
}

/** Pixels masked at least half (the brush's soft edge is partly masked); invert complements the count. */
function countPainted(data: Uint8ClampedArray): number {
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) n++;
  return n;
}

export function MaskEditor({ filename, upload, onSaved, onClose }: Props) {
  const maskRef = useRef<HTMLCanvasElement>(null);
  const baseRef = useRef<HTMLCanvasElement>(null);
  const [picture, setPicture] = useState<Pixels | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tool, setTool] = useState<Tool>("paint");
  const [size, setSize] = useState(8);
  const [painted, setPainted] = useState(0);
  const [saving, setSaving] = useState(false);
  const undoStack = useRef<ImageData[]>([]);
  const redoStack = useRef<ImageData[]>([]);
  const [, setHistoryTick] = useState(0);
  const last = useRef<{ x: number; y: number } | null>(null);

  const context = useCallback(() => maskRef.current?.getContext("2d", { willReadFrequently: true }) ?? null, []);

  const refresh = useCallback(() => {
    const ctx = context();
    const canvas = maskRef.current;
    if (!ctx || !canvas) return;
    setPainted(countPainted(ctx.getImageData(0, 0, canvas.width, canvas.height).data));
    setHistoryTick((t) => t + 1);
  }, [context]);

  // load the picture; its existing transparency is the starting mask
  useEffect(() => {
    let alive = true;
    loadPixels(fileUrl("input", filename)).then(
      (loaded) => {
        if (!alive) return;
        setPicture(loaded);
        setSize(Math.max(1, Math.round(Math.max(loaded.width, loaded.height) / 12)));
      },
      (err: Error) => alive && setError(`Cannot load ${filename}: ${err.message}`),
    );
    return () => {
      alive = false;
    };
  }, [filename]);

  useEffect(() => {
    const canvas = maskRef.current;
    const base = baseRef.current;
    const ctx = context();
    if (!picture || !canvas || !base || !ctx) return;
    const { width: w, height: h, rgba } = picture;
    canvas.width = base.width = w;
    canvas.height = base.height = h;
    const opaque = new ImageData(w, h);
    const mask = ctx.createImageData(w, h);
    for (let i = 0; i < rgba.length; i += 4) {
      opaque.data.set(rgba.subarray(i, i + 3), i);
      opaque.data[i + 3] = 255;
      mask.data[i] = 255;
      mask.data[i + 1] = 0;
      mask.data[i + 2] = 200;
      mask.data[i + 3] = 255 - rgba[i + 3];
    }
    base.getContext("2d")!.putImageData(opaque, 0, 0);
    ctx.putImageData(mask, 0, 0);
    undoStack.current = [];
    redoStack.current = [];
    refresh();
  }, [picture, context, refresh]);

  const snapshot = useCallback(() => {
    const ctx = context();
    const canvas = maskRef.current;
    if (!ctx || !canvas) return;
    undoStack.current.push(ctx.getImageData(0, 0, canvas.width, canvas.height));
    if (undoStack.current.length > HISTORY) undoStack.current.shift();
    redoStack.current = [];
  }, [context]);

  const restore = (from: ImageData[], to: ImageData[]) => {
    const ctx = context();
    const canvas = maskRef.current;
    const state = from.pop();
    if (!ctx || !canvas || !state) return;
    to.push(ctx.getImageData(0, 0, canvas.width, canvas.height));
    ctx.putImageData(state, 0, 0);
    refresh();
  };
  const undo = () => restore(undoStack.current, redoStack.current);
  const redo = () => restore(redoStack.current, undoStack.current);
  const keys = useRef({ undo, redo, onClose });
  keys.current = { undo, redo, onClose };

  // while open, keys are the editor's: Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y undo and redo the mask,
  // Escape cancels, and none reaches the graph's shortcuts (window listeners, bubbling phase).
  // Stopped in the capture phase, a key still does its default action (a button's Enter, the
  // brush slider's arrows): the editor has no text fields that would need the event itself.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      e.stopImmediatePropagation();
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      if (e.key === "Escape") keys.current.onClose();
      else if (mod && key === "z" && !e.shiftKey) keys.current.undo();
      else if (mod && (key === "y" || (key === "z" && e.shiftKey))) keys.current.redo();
      else return;
      e.preventDefault();
    };
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  }, []);

  const clear = () => {
    const ctx = context();
    const canvas = maskRef.current;
    if (!ctx || !canvas) return;
    snapshot();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    refresh();
  };

  const invert = () => {
    const ctx = context();
    const canvas = maskRef.current;
    if (!ctx || !canvas) return;
    snapshot();
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < data.data.length; i += 4) {
      data.data[i] = 255;
      data.data[i + 1] = 0;
      data.data[i + 2] = 200;
      data.data[i + 3] = 255 - data.data[i + 3];
    }
    ctx.putImageData(data, 0, 0);
    refresh();
  };

  const point = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const canvas = e.currentTarget;
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) * canvas.width) / rect.width,
      y: ((e.clientY - rect.top) * canvas.height) / rect.height,
    };
  };

  const stroke = (from: { x: number; y: number }, to: { x: number; y: number }) => {
    const ctx = context();
    if (!ctx) return;
    ctx.save();
    ctx.globalCompositeOperation = tool === "erase" ? "destination-out" : "source-over";
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(to.x, to.y, size / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.restore();
  };

  const save = async () => {
    const canvas = maskRef.current;
    const ctx = context();
    if (!picture || !canvas || !ctx) return;
    setSaving(true);
    setError(null);
    try {
      const { width: w, height: h } = picture;
      const rgba = new Uint8ClampedArray(picture.rgba);
      const mask = ctx.getImageData(0, 0, w, h).data;
      for (let i = 3; i < rgba.length; i += 4) rgba[i] = 255 - mask[i];
      const name = await upload(await encodePngRgba(rgba, w, h), maskedName(filename));
      onSaved(name);
      onClose();
    } catch (err) {
      setError(`Saving the mask failed: ${(err as Error).message}`);
    } finally {
      setSaving(false);
    }
  };

  const w = picture?.width ?? 1;
  const h = picture?.height ?? 1;
  const scale = Math.min(640 / w, 480 / h);
  const display = { width: Math.round(w * scale), height: Math.round(h * scale) };
  const stop = (e: React.SyntheticEvent) => e.stopPropagation();

  return createPortal(
    <div
      className="nf-mask-backdrop"
      data-testid="mask-editor"
      data-painted={painted}
      data-width={picture ? w : 0}
      data-height={picture ? h : 0}
      onPointerDown={stop}
      onMouseDown={stop}
      onClick={stop}
      onDoubleClick={stop}
      onContextMenu={stop}
      onWheel={stop}
    >
      <div className="nf-mask-dialog" role="dialog" aria-label={`Edit the mask of ${filename}`}>
        <div className="nf-mask-title">Mask of {filename}</div>
        <div className="nf-mask-tools">
          <button className={tool === "paint" ? "nf-active" : ""} data-testid="mask-paint" onClick={() => setTool("paint")}>
            paint
          </button>
          <button className={tool === "erase" ? "nf-active" : ""} data-testid="mask-erase" onClick={() => setTool("erase")}>
            erase
          </button>
          <label>
            brush{" "}
            <input
              type="range"
              min={1}
              max={Math.max(2, Math.round(Math.max(w, h) / 2))}
              value={size}
              data-testid="mask-brush-size"
              onChange={(e) => setSize(Number(e.target.value))}
            />{" "}
            <span data-testid="mask-brush-size-value">{size}</span> px
          </label>
          <button data-testid="mask-undo" disabled={!undoStack.current.length} onClick={undo}>
            undo
          </button>
          <button data-testid="mask-redo" disabled={!redoStack.current.length} onClick={redo}>
            redo
          </button>
          <button data-testid="mask-clear" onClick={clear}>
            clear
          </button>
          <button data-testid="mask-invert" onClick={invert}>
            invert
          </button>
        </div>
        <div className="nf-mask-stage" style={display}>
          <canvas ref={baseRef} className="nf-mask-picture" data-testid="mask-picture" style={display} />
          <canvas
            ref={maskRef}
            className="nf-mask-canvas"
            data-testid="mask-canvas"
            style={display}
            onPointerDown={(e) => {
              if (!picture || e.button !== 0) return;
              e.currentTarget.setPointerCapture(e.pointerId);
              snapshot();
              const p = point(e);
              last.current = p;
              stroke(p, p);
            }}
            onPointerMove={(e) => {
              if (!last.current) return;
              const p = point(e);
              stroke(last.current, p);
              last.current = p;
            }}
            onPointerUp={() => {
              if (!last.current) return;
              last.current = null;
              refresh();
            }}
            onPointerCancel={() => {
              last.current = null;
              refresh();
            }}
          />
        </div>
        {error && (
          <div className="nf-mask-error" data-testid="mask-error">
            {error}
          </div>
        )}
        <div className="nf-mask-actions">
          <span className="nf-hint">painted pixels become transparent: LoadImage's mask is 1 there</span>
          <button data-testid="mask-cancel" onClick={onClose}>
            cancel
          </button>
          <button data-testid="mask-save" disabled={!picture || saving} onClick={save}>
            {saving ? "saving…" : "save"}
          </button>
        </div>
      </div>
    </div>,
    document.body,
  );
}
