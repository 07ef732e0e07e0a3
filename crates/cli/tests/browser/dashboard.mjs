// Drives the dashboard in a real browser: Debian's Chromium, headless, through playwright-core.
// Usage: node dashboard.mjs LOGIN_URL SCREENSHOT_DIR TYPED_SESSION_ID EXITING_SESSION_ID
// Prints one JSON object of what it saw; exits non-zero with the reason when a step fails.
import { open } from "./common.mjs";
import { useTerminal } from "./terminal.mjs";


const [loginUrl, shots, typedId, exitingId] = process.argv.slice(2);
const seen = {};
const { browser, page, errors } = await open(1400, 1000);
const fail = async (why) => {
  console.log(JSON.stringify({ ...seen, failed: why }));
  await browser.close();
  process.exit(1);
};
try {

  // The login link logs in and lands on the grid.
  await page.goto(loginUrl);
  await page.waitForSelector("#grid .tile", { timeout: 10000 });
  await page.waitForFunction(() => document.querySelectorAll("#grid .tile").length === 3, null, { timeout: 10000 });
  seen.tiles = await page.$$eval("#grid .tile", (tiles) => tiles.map((t) => ({
    id: t.dataset.id,
    state: t.dataset.state,
    screen: t.querySelector(".screen").textContent,
  })));
  seen.title = await page.title();
  // A screen that prints markup shows it as text, and runs nothing.
  seen.pwned = await page.evaluate(() => window.pwned === 1);
  await page.screenshot({ path: shots + "/grid.png", fullPage: true });

  // A tile's screen follows its session without a reload.
  await page.waitForFunction(
    (id) => [...document.querySelectorAll("#grid .tile")]
      .some((t) => t.dataset.id === id && t.querySelector(".screen").textContent.includes("tick-3")),
    exitingId,
    { timeout: 15000 },
  );
  seen.followed = true;

  // Send to every session shown.
  await page.fill("#send-all input[name=text]", "echo to-all-$((40+2))");
  await page.click("#send-all button[type=submit]");
  await page.waitForFunction(
    (exiting) => [...document.querySelectorAll("#grid .tile")]
      .filter((t) => t.dataset.id !== exiting)
      .every((t) => t.querySelector(".screen").textContent.includes("to-all-42")),
    exitingId,
    { timeout: 15000 },
  );
  seen.sent_to_all = true;

  // One session's own terminal: keyboard in, output back, its size the browser's.
  Object.assign(seen, await useTerminal(page, loginUrl, typedId, shots + "/terminal.png"));
  if (seen.terminal_failed) await fail(seen.terminal_failed);

  // Back on the grid: the session that exits says so.
  await page.goto(new URL("/dashboard/", loginUrl).href);
  await page.waitForFunction(
    (id) => [...document.querySelectorAll("#grid .tile")]
      .some((t) => t.dataset.id === id && t.dataset.state === "exited"),
    exitingId,
    { timeout: 20000 },
  );
  seen.exited_label = await page.$$eval("#grid .tile", (tiles, id) =>
    tiles.find((t) => t.dataset.id === id).querySelector(".state").textContent, exitingId);
  // Launch from the page: one more shell, on tmux, and its tile comes.
  await page.selectOption("#launch select[name=profile]", "shell");
  await page.selectOption("#launch select[name=target]", "tmux");
  await page.click("#launch button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#grid .tile").length === 4, null, { timeout: 15000 });
  await page.waitForFunction(() => document.getElementById("message").textContent.includes("launched"), null, { timeout: 15000 });
  seen.launched = await page.textContent("#message");
  // Close the exited one from its tile: its tile goes.
  await page.click(`#grid .tile[data-id="${exitingId}"] button[data-action=close]`);
  await page.waitForFunction(
    (id) => ![...document.querySelectorAll("#grid .tile")].some((t) => t.dataset.id === id),
    exitingId,
    { timeout: 15000 },
  );
  seen.closed = true;
  seen.errors = errors;
  console.log(JSON.stringify(seen));
} catch (error) {
  await fail(String(error));
}
await browser.close();
