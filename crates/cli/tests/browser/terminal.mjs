// One session's terminal page in a real browser (Debian's Chromium, headless, through playwright-core):
// a command typed on the keyboard shows its output, and the session takes the browser terminal's size,
// then its new size when the window shrinks (`stty size` in the session says what it has).
// As a module: `useTerminal(page, loginUrl, id, screenshot)` for a page already logged in.
// As a script: node terminal.mjs LOGIN_URL SCREENSHOT_PATH SESSION_ID; prints one JSON object of what
// it saw, and exits non-zero with the reason when a step fails.
import { pathToFileURL } from "node:url";
import { open } from "./common.mjs";

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function useTerminal(page, loginUrl, id, screenshot) {
  const seen = {};
  await page.goto(new URL("/dashboard/sessions/" + encodeURIComponent(id), loginUrl).href);
  await page.waitForSelector("#terminal .xterm", { timeout: 10000 });
  await page.waitForFunction(() => window.mahavishnuTerminal !== undefined, null, { timeout: 10000 });
  await page.click("#terminal");
  await page.keyboard.type("echo typed-in-$((6*7))");
  await page.keyboard.press("Enter");
  const terminalText = () => page.evaluate(() => {
    const buffer = window.mahavishnuTerminal.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\n");
  });
  const started = Date.now();
  while (!(await terminalText()).includes("typed-in-42")) {
    if (Date.now() - started > 15000) {
      return { ...seen, terminal_failed: "the typed command's output never showed: " + (await terminalText()) };
    }
    await pause(100);
  }
  seen.terminal_echo = true;
  // The session takes the browser terminal's size, and follows it when the window changes.
  const sizes = [];
  for (const viewport of [null, { width: 900, height: 500 }]) {
    if (viewport) await page.setViewportSize(viewport);
    // Once the terminal has fitted itself to the window (a size other than the last one).
    const wanted = await page.waitForFunction((before) => {
      const t = window.mahavishnuTerminal;
      const now = t.rows + " " + t.cols;
      return now !== before && now;
    }, sizes.length ? sizes[sizes.length - 1].browser : null, { timeout: 10000 });
    const browser = await wanted.jsonValue();
    await page.keyboard.type("stty size");
    await page.keyboard.press("Enter");
    // The last size shown, once it is the browser's (the test compares them, so a wrong one fails).
    const from = Date.now();
    let session = null;
    while (session !== browser && Date.now() - from < 15000) {
      const shown = (await terminalText()).split("\n").map((line) => line.trim())
        .filter((line) => /^\d+ \d+$/.test(line));
      session = shown.length ? shown[shown.length - 1] : null;
      if (session !== browser) await pause(100);
    }
    sizes.push({ browser, session });
  }
  seen.terminal_sizes = sizes;
  await page.screenshot({ path: screenshot, fullPage: true });
  return seen;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [loginUrl, screenshot, id] = process.argv.slice(2);
  const { browser, page, errors } = await open(1400, 1000);
  let seen;
  try {
    await page.goto(loginUrl);
    seen = await useTerminal(page, loginUrl, id, screenshot);
    seen.errors = errors;
  } catch (error) {
    seen = { terminal_failed: String(error) };
  }
  await browser.close();
  console.log(JSON.stringify(seen));
  process.exit(seen.terminal_failed ? 1 : 0);
}
