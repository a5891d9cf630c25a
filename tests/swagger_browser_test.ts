/**
 * Swagger UI in a real browser: Debian's chromium, driven by playwright-core, against the real app served
 * on 127.0.0.1 and a random port. The page must load with every request going to the service itself (no
 * CDN, nothing leaves the machine), without failed requests or console errors, list the seven operations,
 * and "Try it out" on POST /api/v1/init must really create an account.
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs it).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { call } from "./support/harness.ts";
import { type LiveServer, startLiveServer } from "./support/live_server.ts";

const CHROMIUM = "/usr/bin/chromium";
/**
 * A name that is not "localhost" or "127.0.0.1", resolved by chromium itself to 127.0.0.1: Swagger UI
 * behaves differently on loopback addresses (it skips its online validator badge there), so the page is
 * also checked as served under a real host name.
 */
const HOST_NAME = "mini-wallet.test";
const CHROMIUM_ARGS = [
  `--host-resolver-rules=MAP ${HOST_NAME} 127.0.0.1`,
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The seven operations as Swagger UI shows them: method, path, summary. */
const OPERATIONS = [
  ["POST", "/api/v1/init", "Initialize my account for wallet"],
  ["POST", "/api/v1/wallet", "Enable my wallet"],
  ["GET", "/api/v1/wallet", "View my wallet balance"],
  ["GET", "/api/v1/wallet/transactions", "View my wallet transactions"],
  ["POST", "/api/v1/wallet/deposits", "Add virtual money to my wallet"],
  ["POST", "/api/v1/wallet/withdrawals", "Use virtual money from my wallet"],
  ["PATCH", "/api/v1/wallet", "Disable my wallet"],
];

async function assertChromiumInstalled(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `${CHROMIUM} is missing: install it with \`apt-get install -y chromium\` (.ci/run does) to run this test`,
    );
  }
}

describe("Swagger UI in chromium", () => {
  let live: LiveServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** The origins the page may talk to: the service, by address and by host name. */
  let allowed: Set<string>;
  /** Every URL the page asked for, the failed ones, console errors and uncaught page errors. */
  const requested: string[] = [];
  const failed: string[] = [];
  const errors: string[] = [];

  before(async () => {
    await assertChromiumInstalled();
    live = startLiveServer();
    allowed = new Set([live.baseUrl, `http://${HOST_NAME}:${live.port}`]);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    // A fresh context: its own empty profile, no cookies or storage from anything earlier.
    context = await browser.newContext();
    context.setDefaultTimeout(10_000);
    // Nothing may leave the machine: a request to anywhere but the service is recorded and refused.
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      return allowed.has(url.origin) ? route.continue() : route.abort("blockedbyclient");
    });
    context.on("request", (request) => requested.push(request.url()));
    context.on("requestfailed", (request) => {
      failed.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    });
    page = await context.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  });

  after(async () => {
    await browser?.close();
    await live?.close();
  });

  /** Open `path` and wait until Swagger UI has rendered the operations. */
  async function openSwagger(path: string, origin = live.baseUrl) {
    const response = await page.goto(`${origin}${path}`, { waitUntil: "load" });
    assert.ok(response, `no response for ${path}`);
    assert.equal(response.status(), 200, `${path}: ${response.status()}`);
    await page.locator(".opblock").nth(OPERATIONS.length - 1).waitFor();
    await page.waitForLoadState("networkidle");
    return response;
  }

  it("loads /swagger with every request served by the service itself, none failing", async () => {
    const response = await openSwagger("/swagger");
    assert.match(response.headers()["content-type"] ?? "", /^text\/html/);
    assert.equal(await page.title(), "Mini Wallet API");
    assert.match(await page.locator(".info .title").innerText(), /^Mini Wallet API/);
    for (
      const path of ["/swagger", "/swagger/swagger-ui.css", "/swagger/swagger-ui-bundle.js", "/openapi.json"]
    ) {
      assert.ok(requested.includes(`${live.baseUrl}${path}`), `${path} was not requested: ${requested}`);
    }
    const elsewhere = requested.filter((url) => new URL(url).origin !== live.baseUrl);
    assert.deepEqual(elsewhere, [], "requests that would leave the service");
    assert.deepEqual(failed, []);
    assert.deepEqual(errors, []);
  });

  it("lists the seven operations with their methods, paths and summaries", async () => {
    const shown = await page.locator(".opblock").evaluateAll((blocks) =>
      blocks.map((block) => [
        block.querySelector(".opblock-summary-method")?.textContent?.trim(),
        block.querySelector(".opblock-summary-path")?.getAttribute("data-path"),
        block.querySelector(".opblock-summary-description")?.textContent?.trim(),
      ])
    );
    const key = (op: unknown[]) => op.join(" ");
    assert.deepEqual(shown.map(key).sort(), OPERATIONS.map(key).sort());
  });

  it("'Try it out' on POST /api/v1/init creates an account: 201 and a token in the live response", async () => {
    const xid = `swagger-${crypto.randomUUID()}`;
    const block = page.locator(".opblock-post").filter({
      has: page.locator('.opblock-summary-path[data-path="/api/v1/init"]'),
    });
    await block.locator(".opblock-summary").first().click();
    await block.locator("button.try-out__btn").click();
    // The first media type, multipart/form-data, renders a form: one input per field.
    const field = block.locator('tr[data-property-name="customer_xid"] input');
    await field.fill(xid);

    const answered = page.waitForResponse((r) => r.url() === `${live.baseUrl}/api/v1/init`);
    await block.locator("button.execute").click();
    const response = await answered;
    assert.equal(response.status(), 201);
    assert.match(response.request().headers()["content-type"] ?? "", /^multipart\/form-data; boundary=/);
    const body = await response.json();
    assert.equal(body.status, "success");
    assert.equal(typeof body.data.token, "string");

    // What the user sees: the live response row with the status and the body.
    const shown = block.locator(".live-responses-table tbody tr.response").first();
    await shown.waitFor();
    assert.equal((await shown.locator(".response-col_status").innerText()).trim(), "201");
    const shownBody = await shown.locator(".response-col_description .highlight-code pre").first()
      .innerText();
    assert.equal(JSON.parse(shownBody).data.token, body.data.token);

    // The account is real and is the one typed in: the token enables a wallet owned by that customer_xid.
    const enable = await call(live.harness.app, "POST", "/api/v1/wallet", { token: body.data.token });
    assert.equal(enable.status, 201, JSON.stringify(enable.body));
    assert.equal(enable.body.data.wallet.owned_by, xid);
    assert.deepEqual(failed, []);
    assert.deepEqual(errors, []);
  });

  it("/swagger/index.html leads to the same page", async () => {
    const response = await openSwagger("/swagger/index.html");
    assert.equal(new URL(page.url()).pathname, "/swagger");
    const redirect = response.request().redirectedFrom();
    assert.ok(redirect, "expected a redirect");
    assert.equal(new URL(redirect.url()).pathname, "/swagger/index.html");
    assert.equal(await page.locator(".opblock").count(), OPERATIONS.length);
    assert.deepEqual(requested.filter((url) => new URL(url).origin !== live.baseUrl), []);
    assert.deepEqual(failed, []);
    assert.deepEqual(errors, []);
  });

  it("served under a host name (not a loopback address), still requests nothing from elsewhere", async () => {
    const origin = `http://${HOST_NAME}:${live.port}`;
    const before = requested.length;
    await openSwagger("/swagger", origin);
    const made = requested.slice(before);
    assert.ok(made.includes(`${origin}/openapi.json`), made.join(", "));
    assert.deepEqual(
      made.filter((url) => new URL(url).origin !== origin),
      [],
      "requests that would leave the service",
    );
    assert.deepEqual(failed, []);
    assert.deepEqual(errors, []);
  });
});
