// vitest: the unit tests of the protocol core (test/unit) run in Node.
// The browser tests (test/browser) drive Chromium through playwright-core and
// are run on their own, so they are kept out of the default include.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/unit/**/*.test.ts"],
    environment: "node",
    testTimeout: 20000,
  },
});
