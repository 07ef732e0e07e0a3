// The dashboard's deployments page in a real browser: the graph, the traffic, a release from the
// page, and logs that follow. Usage: node deployments.mjs LOGIN_URL SCREENSHOT_DIR OLD_REVISION
import { open, run } from "./common.mjs";

const [loginUrl, shots, oldRevision] = process.argv.slice(2);
const seen = {};
const { browser, page, errors } = await open(1400, 1000);
await run(browser, errors, seen, async () => {
  await page.goto(loginUrl);
  await page.goto(new URL("/dashboard/deployments", loginUrl).href);
  await page.waitForSelector("svg.graph", { timeout: 10000 });
  seen.nodes = await page.$$eval("svg.graph g.node text:first-of-type", (texts) => texts.map((t) => t.textContent));
  seen.edges = await page.$$eval("svg.graph line", (lines) => lines.length);
  seen.rows = await page.$$eval("tbody tr", (rows) => rows.map((r) => [...r.querySelectorAll("td")].slice(0, 5).map((c) => c.textContent.trim())));
  await page.screenshot({ path: shots + "/deployments.png", fullPage: true });
  // Release all traffic back to the old revision, from the page.
  await page.click(`button[data-action=release][data-revision="${oldRevision}"]`);
  await page.waitForFunction(
    (revision) => [...document.querySelectorAll("tbody tr")].some((r) =>
      r.children[2].textContent.trim() === revision && r.children[3].textContent.includes("100%")),
    oldRevision,
    { timeout: 20000 },
  );
  seen.released = true;
  // Its logs, followed.
  await page.goto(new URL("/dashboard/deployments/web/logs", loginUrl).href);
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("listening"), null, { timeout: 10000 });
  seen.logs = true;
});
