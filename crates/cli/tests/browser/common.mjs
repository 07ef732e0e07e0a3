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
