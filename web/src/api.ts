// The server's HTTP API (same origin), typed as far as the editor needs it.

export interface JsonSchema {
  type?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  "x-nodeflow"?: {
    multiline?: boolean;
    files?: string;
    seed?: boolean;
    display?: string;
    step?: number;
  };
  [key: string]: unknown;
}

export interface InputDef {
  kind: "socket" | "widget";
  type: string;
  required: boolean;
  default?: unknown;
  schema?: JsonSchema;
  description?: string;
}

export interface NodeDef {
  type: string;
  display_name: string;
  category: string;
  description: string;
  inputs: Record<string, InputDef>;
  outputs: { name: string; type: string }[];
  output_node: boolean;
  plugin: string;
  version?: unknown;
  /** Other names search finds it by (ComfyUI's KSampler for Denoise, ...). */
  aliases?: string[];
}

export interface TypeDef {
  name: string;
  color: string;
  description: string;
  parents: string[];
  plugin: string;
}

export interface Issue {
  node: string | null;
  input: string | null;
  code: string;
  message: string;
}

export interface WorkflowJson {
  version: number;
  nodes: Record<string, { type: string; inputs: Record<string, unknown>; mode?: "bypass" | "mute" }>;
  ui?: Record<string, unknown>;
  [key: string]: unknown;
}

/** What /api/workflows says about one example: the built-in random test models it uses. */
export interface ExampleInfo {
  name: string;
  test_models: Record<string, string>;
}

export interface ImageRef {
  filename: string;
  subfolder: string;
  type: string;
  /** The server's ready URL for the picture (run records and node.finished events carry it). */
  url?: string;
}

export interface RunSummary {
  run_id: string;
  status: string;
  submitted_at?: number | string | null;
  started_at?: number | string | null;
  finished_at?: number | string | null;
  outputs?: Record<string, unknown> | null;
  error?: { message?: string; node?: string; [k: string]: unknown } | null;
  position?: number | null;
  workflow?: WorkflowJson;
}

export class ApiError extends Error {
  status: number;
  body: unknown;
  constructor(status: number, message: string, body: unknown) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function request<T>(method: string, url: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: {} };
  if (body instanceof FormData || body instanceof Blob) {
    init.body = body; // a Blob goes as it is (a file for /api/import)
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  let data: unknown = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const err = data && typeof data === "object" ? (data as { error?: unknown }).error : undefined;
    const message = err ? String(err) : `${method} ${url}: HTTP ${response.status}`;
    throw new ApiError(response.status, message, data);
  }
  return data as T;
}

/** What POST /api/import answers: the file as a nodeflow workflow, and what the translation
 * approximated (located like validation issues, in the source file's node ids). */
export interface Imported {
  workflow: WorkflowJson;
  format: string;
  warnings: Issue[];
}

export const api = {
  nodes: () => request<Record<string, NodeDef>>("GET", "/api/nodes"),
  types: () => request<Record<string, TypeDef>>("GET", "/api/types"),
  system: () => request<Record<string, unknown>>("GET", "/api/system"),
  models: (kind: string) =>
    request<{ kind: string; models: string[] }>("GET", `/api/models/${encodeURIComponent(kind)}`),
  workflows: () => request<{ workflows: string[]; examples?: ExampleInfo[] }>("GET", "/api/workflows"),
  workflow: (name: string) => request<WorkflowJson>("GET", `/api/workflows/${encodeURIComponent(name)}`),
  /** Queue a run; `front`: ahead of every run already waiting (not of the one running). */
  submit: (workflow: WorkflowJson, front = false) =>
    request<{ run_id: string; position: number }>("POST", "/api/runs", front ? { workflow, front } : { workflow }),
  runs: (limit = 50) => request<{ runs: RunSummary[] }>("GET", `/api/runs?limit=${limit}`),
  run: (id: string) => request<RunSummary>("GET", `/api/runs/${encodeURIComponent(id)}`),
  cancel: (id: string) => request<unknown>("POST", `/api/runs/${encodeURIComponent(id)}/cancel`),
  interrupt: () => request<unknown>("POST", "/api/interrupt"),
  /** A workflow file in any format the server imports (ComfyUI API or UI JSON, a ComfyUI PNG). */
  importFile: (file: Blob) => request<Imported>("POST", "/api/import", file),
  upload: (file: Blob, name: string) => {
    const form = new FormData();
    form.append("image", file, name);
    return request<{ name: string }>("POST", "/api/uploads", form);
  },
};

export function fileUrl(kind: "output" | "input", path: string): string {
  return `/api/files/${kind}/${path.split("/").map(encodeURIComponent).join("/")}`;
}

/** URL of an image a SaveImage/PreviewImage report names (relative to the output folder). */
export function imageUrl(image: ImageRef): string {
  if (typeof image.url === "string" && image.url.startsWith("/api/files/")) return image.url;
  const sub = image.subfolder && image.subfolder !== "." ? `${image.subfolder}/` : "";
  return fileUrl("output", `${sub}${image.filename}`);
}

/** The images an output node's report lists. */
export function reportImages(report: unknown): ImageRef[] {
  if (!report || typeof report !== "object") return [];
  const images = (report as { images?: unknown }).images;
  if (!Array.isArray(images)) return [];
  return images.filter(
    (i): i is ImageRef => !!i && typeof i === "object" && typeof (i as ImageRef).filename === "string",
  );
}
