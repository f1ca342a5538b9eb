// Writes dist/source-hash.txt: sha256 over the editor's sources, so a Python test can check
// that the committed bundle was built from the committed sources without needing Node.js.
//
// Hashed, in order of their sorted relative paths (POSIX separators): package-lock.json,
// package.json, index.html, vite.config.ts, tsconfig*.json and every file under src/.
// For each file: the UTF-8 relative path, a NUL byte, the file's length in bytes as decimal
// ASCII, a NUL byte, then its raw bytes. (tests can recompute this in a few lines of Python.)
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...walk(full));
    else out.push(full);
  }
  return out;
}

export function sourceFiles() {
  const files = [];
  for (const name of readdirSync(root)) {
    if (
      ["package-lock.json", "package.json", "index.html", "vite.config.ts"].includes(name) ||
      /^tsconfig.*\.json$/.test(name)
    ) {
      files.push(join(root, name));
    }
  }
  files.push(...walk(join(root, "src")));
  return files
    .map((f) => relative(root, f).split(sep).join("/"))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export function sourceHash() {
  const hash = createHash("sha256");
  for (const rel of sourceFiles()) {
    const data = readFileSync(join(root, rel));
    hash.update(Buffer.from(rel, "utf8"));
    hash.update(Buffer.from([0]));
    hash.update(Buffer.from(String(data.length), "ascii"));
    hash.update(Buffer.from([0]));
    hash.update(data);
  }
  return hash.digest("hex");
}

const digest = sourceHash();
mkdirSync(join(root, "dist"), { recursive: true });
writeFileSync(join(root, "dist", "source-hash.txt"), digest + "\n");
console.log(`dist/source-hash.txt: ${digest}`);
