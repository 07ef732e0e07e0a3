// The dashboard's workflows page in a real browser: "Run now" runs a workflow, the page shows its
// run and its sweep, and the sweep's page shows the results (markup as text).
// Usage: node workflows.mjs LOGIN_URL SCREENSHOT_DIR WORKFLOW
import { open, run } from "./common.mjs";

const [loginUrl, shots, workflow] = process.argv.slice(2);
const seen = {};
const { browser, page, errors } = await open(1400, 900);
await run(browser, errors, seen, async () => {
  await page.goto(loginUrl);
  await page.goto(new URL("/dashboard/workflows", loginUrl).href);
  const sweeps = () => document.querySelectorAll("a[href^='/dashboard/sweeps/']").length;
  seen.sweeps_before = await page.evaluate(sweeps);
  await page.click(`button[data-action=run-workflow][data-name="${workflow}"]`);
  // The page reloads once the run is done: one more sweep is listed.
  await page.waitForFunction((before) => document.querySelectorAll("a[href^='/dashboard/sweeps/']").length === before + 1,
    seen.sweeps_before, { timeout: 20000 });
  seen.sweeps_after = await page.evaluate(sweeps);
  seen.last = await page.$$eval("tbody tr", (rows) => rows[0].querySelectorAll("td")[4].textContent);
  await page.screenshot({ path: shots + "/workflows.png", fullPage: true });
  await page.click("a[href^='/dashboard/sweeps/']");
  await page.waitForSelector("#sweep-page tbody tr", { timeout: 10000 });
  seen.results = await page.$$eval("#sweep-page tbody tr", (rows) => rows.map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent)));
  seen.pwned = await page.evaluate(() => window.pwned === 1);
});
