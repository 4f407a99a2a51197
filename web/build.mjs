// Builds the browser app: bundles src/main.ts (and the protocol core it
// imports) into dist/app.js, minified ES2020, and copies the page's static
// files beside it. Run with `npm run build` after `npm ci`.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");

await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(src, "main.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  legalComments: "none",
  sourcemap: false,
  logLevel: "warning",
});
for (const name of ["index.html", "style.css"]) {
  await copyFile(join(src, name), join(dist, name));
}
console.log("built", dist);
