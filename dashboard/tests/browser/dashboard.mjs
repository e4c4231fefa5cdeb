// Drives the dashboard in headless Chromium as an operator would: sign in with an ops key, the
// page goes live, its numbers move as events are sent, a page of another origin cannot purge
// with the operator's session, the dead letters are listed a page at a time, and one is dry-run
// then replayed from the page.
// Run by `cargo test -p dashboard` (which starts the services and checks the replayed event was
// applied and the forged purge refused); exits non-zero on the first failed expectation.
//
// Environment: DASHBOARD_URL, GATEWAY_URL, API_KEY (every scope), DEAD_PRODUCT (the product of
// the planted dead letter to replay; one other is planted), CHROMIUM (the browser binary), SCREENSHOTS (optional: a directory
// for PNGs).
import http from "node:http";
import { chromium } from "playwright-core";

const { DASHBOARD_URL, GATEWAY_URL, API_KEY, DEAD_PRODUCT, CHROMIUM, SCREENSHOTS } = process.env;
const expect = (condition, message) => {
  if (!condition) throw new Error(message);
};
const number = (text) => Number(String(text).replace(/[^0-9.]/g, ""));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(DASHBOARD_URL);

  // Signed out, the page asks for a key; a wrong one is refused, an ops key lets the operator in.
  await page.waitForSelector("[data-testid=signin-key]", { state: "visible" });
  await page.fill("[data-testid=signin-key]", "ppk_not-a-real-key");
  await page.click("[data-testid=signin-go]");
  await page.waitForFunction(() => document.querySelector("[data-testid=signin-error]").textContent.includes("not valid"));
  await page.fill("[data-testid=signin-key]", API_KEY);
  // The cookie is there once the sign-in's answer has arrived.
  const signedIn = page.waitForResponse((r) => new URL(r.url()).pathname.endsWith("/session") && r.request().method() === "POST");
  await page.click("[data-testid=signin-go]");
  expect((await signedIn).ok(), "the ops key signs in");
  const cookies = await context.cookies(DASHBOARD_URL);
  // `__Host-pipeline_session` where cookies are Secure (the default), `pipeline_session` otherwise.
  const session = cookies.find((c) => c.name.endsWith("pipeline_session"));
  expect(session && session.httpOnly && session.sameSite === "Strict", `session cookie: ${JSON.stringify(cookies)}`);

  // Live: the stream connects and the totals show numbers.
  await page.waitForFunction(() => document.querySelector("#stream-state").textContent.includes("live"));
  await page.waitForFunction(() => /\d/.test(document.querySelector("[data-testid=accepted-total]").textContent));
  const before = number(await page.textContent("[data-testid=accepted-total]"));

  // Numbers change as events are sent.
  const sent = 20;
  for (let i = 0; i < sent; i++) {
    const response = await fetch(`${GATEWAY_URL}/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ product_id: `browser-${i % 4}`, stock: 100 + i }),
    });
    expect(response.status === 202, `event ${i} answered ${response.status}`);
  }
  await page.waitForFunction(
    ([selector, target]) => Number(document.querySelector(selector).textContent.replace(/[^0-9.]/g, "")) >= target,
    ["[data-testid=accepted-total]", before + sent],
    { timeout: 30_000 },
  );
  await page.waitForFunction(
    () => Number(document.querySelector("[data-testid=applied-total]").textContent.replace(/[^0-9.]/g, "")) >= 20,
    null,
    { timeout: 30_000 },
  );
  // The throughput chart has its axes: rates on the left (top, middle, zero), times below.
  const rates = await page.$$eval("[data-testid=chart-y] span", (s) => s.map((x) => x.textContent));
  expect(rates.length === 3 && rates.every((r) => r.endsWith("/s")) && rates[2] === "0/s", `y axis: ${rates}`);
  const times = await page.$$eval("[data-testid=chart-x] span", (s) => s.map((x) => x.textContent));
  expect(times.length === 3 && times.every((t) => /\d/.test(t)), `x axis: ${times}`);
  if (SCREENSHOTS) await page.screenshot({ path: `${SCREENSHOTS}/overview.png`, fullPage: true });

  // Another origin (same host, another port: the session cookie goes along) tries to purge every
  // dead letter with the operator's session, by a form and by a script: both are refused.
  const purge = new URL("api/v1/dead-letters/purge", DASHBOARD_URL).href;
  const attacker = http.createServer((_, response) => {
    response.setHeader("content-type", "text/html");
    response.end(`<!doctype html><form id="f" method="POST" enctype="text/plain" action="${purge}">
      <input name='{"all": true, "x": "' value='"}'></form>
      <script>
        fetch("${purge}", { method: "POST", mode: "no-cors", credentials: "include", body: '{"all": true}' })
          .finally(() => document.getElementById("f").submit());
      </script>`);
  });
  await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
  const evil = await context.newPage();
  await evil.goto(`http://127.0.0.1:${attacker.address().port}/`);
  await evil.waitForURL(purge);
  const refused = await evil.textContent("body");
  expect(refused.includes("refused"), `the forged purge answered: ${refused}`);
  await evil.close();
  attacker.close();

  // Dead letters: one per page, then "Show more" follows the cursor to the second and last.
  await page.fill("[data-testid=dl-limit]", "1");
  await page.click("[data-testid=dl-load]");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=dl-row]").length === 1);
  expect(await page.isVisible("[data-testid=dl-more]"), "a first page of one offers more");
  await page.click("[data-testid=dl-more]");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=dl-row]").length === 2);
  expect(!(await page.isVisible("[data-testid=dl-more]")), "the last page offers no more");
  // Select the planted one, dry run, replay.
  const row = page.locator(`[data-testid=dl-row]`, { hasText: DEAD_PRODUCT });
  await row.waitFor({ timeout: 30_000 });
  await row.locator("[data-testid=dl-select]").check();
  await page.click("[data-testid=dl-dry-run]");
  // The dry run's answer as a sentence and a table, one row per dead letter.
  await page.waitForSelector("[data-testid=dl-outcome]");
  const dry = await page.textContent("[data-testid=dl-summary]");
  expect(/^Dry run: 1 would be replayed, 0 of them already applied/.test(dry), `the dry run said: ${dry}`);
  expect((await page.textContent("[data-testid=dl-outcome]")) === "would_replay", "the row's outcome");
  if (SCREENSHOTS) await page.screenshot({ path: `${SCREENSHOTS}/dead-letters.png`, fullPage: true });
  await page.click("[data-testid=dl-replay]");
  await page.waitForFunction(() => document.querySelector("[data-testid=dl-outcome]")?.textContent === "replayed");
  expect((await page.textContent("[data-testid=dl-summary]")) === "Replayed 1.", "the replay's summary");

  // The lookup shows the replayed event's product once applied.
  await page.selectOption("[data-testid=lookup-kind]", "products");
  await page.fill("[data-testid=lookup-id]", DEAD_PRODUCT);
  await page.waitForFunction(
    async (product) => {
      document.querySelector("[data-testid=lookup-go]").click();
      await new Promise((r) => setTimeout(r, 300));
      return document.querySelector("[data-testid=lookup-result]").textContent.includes(`"product_id": "${product}"`);
    },
    DEAD_PRODUCT,
    { timeout: 30_000, polling: 500 },
  );
  if (SCREENSHOTS) await page.screenshot({ path: `${SCREENSHOTS}/lookup.png`, fullPage: true });
  expect(errors.length === 0, `the page threw: ${errors.join("; ")}`);
  console.log("browser: signed in, live numbers moved, forged purge refused, dead letters paged, one dry-run and replayed, lookup found it");
} finally {
  await browser.close();
}
