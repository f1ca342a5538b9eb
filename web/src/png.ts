// A PNG's text chunks: nodeflow's SaveImage writes its workflow in "workflow", ComfyUI writes
// "prompt" (API format) and "workflow" (UI format); openfile.ts tells them apart.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Text chunks (tEXt, zTXt, iTXt) of a PNG by keyword; null if it is not a PNG. */
export async function pngTextChunks(buffer: ArrayBuffer): Promise<Record<string, string> | null> {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const out: Record<string, string> = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const start = offset + 8;
    const end = start + length;
    if (end > bytes.length) break;
    const chunk = bytes.subarray(start, end);
    try {
      if (type === "tEXt" || type === "zTXt" || type === "iTXt") {
        const nul = chunk.indexOf(0);
        if (nul > 0) {
          const key = latin1.decode(chunk.subarray(0, nul));
          if (type === "tEXt") {
            out[key] = latin1.decode(chunk.subarray(nul + 1));
          } else if (type === "zTXt") {
            out[key] = latin1.decode(await inflate(chunk.subarray(nul + 2)));
          } else {
            const compressed = chunk[nul + 1] === 1;
            let p = nul + 3;
            const langEnd = chunk.indexOf(0, p);
            p = langEnd + 1;
            const transEnd = chunk.indexOf(0, p);
            p = transEnd + 1;
            const text = chunk.subarray(p);
            out[key] = utf8.decode(compressed ? await inflate(text) : text);
          }
        }
      }
    } catch {
      /* a broken chunk is skipped */
    }
    if (type === "IEND") break;
    offset = end + 4; // skip CRC
  }
  return out;
}
