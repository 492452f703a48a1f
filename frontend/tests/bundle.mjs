// The page's TypeScript modules for Node (unit tests and micro-benchmarks): `code` is bundled
// by Vite's build API and imported. Its bundle lives under node_modules/.cache (as Vite's own
// cache does), so that the bundle's imports of npm packages resolve.

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "vite";

const root = resolve(import.meta.dirname, "..");
/** The page's sources, for `code` to import from. */
export const src = join(root, "src");

/** Bundles `code` (TypeScript) under `name` and imports it; `done()` removes the bundle. */
export async function bundleForNode(name, code) {
  const out = join(root, "node_modules/.cache", `hmon-${name}`);
  mkdirSync(out, { recursive: true });
  const entry = join(out, "entry.ts");
  writeFileSync(entry, code);
  await build({
    configFile: false,
    logLevel: "silent",
    root,
    build: { outDir: join(out, "dist"), emptyOutDir: true, minify: false, lib: { entry, formats: ["es"], fileName: name } },
  });
  const m = await import(pathToFileURL(join(out, "dist", `${name}.js`)).href);
  return { m, done: () => rmSync(out, { recursive: true, force: true }) };
}
