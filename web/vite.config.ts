import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The bundle is served by `nodeflow serve` at "/" (index.html) and "/assets/*" (hashed files).
// `npm run dev` proxies the API to a server on :8188.
export default defineConfig({
  base: "/",
  plugins: [react()],
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    // No inline scripts or data: modules: the page's CSP is script-src 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8188", ws: true, changeOrigin: false },
    },
  },
});
