// What every browser test starts with: Debian's Chromium, headless, through playwright-core (from
// MAHAVISHNU_TEST_NODE_MODULES), and a page that keeps the errors its script raises.
import { createRequire } from "node:module";

export async function open(width, height) {
  const require = createRequire(process.env.MAHAVISHNU_TEST_NODE_MODULES + "/");
  const { chromium } = require("playwright-core");
  const browser = await chromium.launch({
    executablePath: process.env.MAHAVISHNU_TEST_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const page = await browser.newPage({ viewport: { width, height } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  return { browser, page, errors };
}

// Runs the steps of a test, which fill `seen`; prints `seen` as one JSON object (with the page's
// errors, or the reason a step failed) and ends the process: non-zero when a step failed.
export async function run(browser, errors, seen, steps) {
  let code = 0;
  try {
    await steps();
    seen.errors = errors;
  } catch (error) {
    seen.failed = String(error);
    code = 1;
  }
  console.log(JSON.stringify(seen));
  await browser.close();
  process.exit(code);
}
