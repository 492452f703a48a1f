import { defineConfig } from "vite";

export default defineConfig({
  // The hub serves the page at `/` and its assets at `/assets/`.
  base: "/",
  build: { target: "es2022", sourcemap: false, reportCompressedSize: true },
});
