// Writes a gzip copy (name.gz) of each text asset in dist/; the hub serves it to browsers that
// accept gzip, so nothing is compressed per request.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync, constants } from "node:zlib";

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(js|css|html|svg|json)$/.test(name)) {
      writeFileSync(p + ".gz", gzipSync(readFileSync(p), { level: constants.Z_BEST_COMPRESSION }));
    }
  }
}
walk(new URL("../dist", import.meta.url).pathname);
