// nodeflow-imageops editor extension: loaded by the editor as an ES module from
// /extensions/imageops/imageops.js (listed by GET /api/extensions).
// It only describes the plugin; editors that support node colouring may use `nodeColors`.
export const plugin = "imageops";
export const nodeColors = {
  "imageops.ImageGrid": "#42a5f5",
  "imageops.ApplyLUT": "#ab47bc",
};
export default { plugin, nodeColors };
