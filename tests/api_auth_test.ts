/** Authentication: `Token` and `Bearer` schemes, and every way a token can be wrong (401 JSend fail). */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt, SignJWT } from "jose";
import {
  call,
  config,
  createHarness,
  enabledWallet,
  type Harness,
  newCustomerXid,
} from "./support/harness.ts";

let h: Harness;
let token: string;
let walletId: string;
let xid: string;
before(async () => {
  h = createHarness();
  ({ token, walletId, xid } = await enabledWallet(h.app));
});
after(async () => {
  await h.close();
});

const SECRET = new TextEncoder().encode(config.JWT_SECRET);

function b64url(value: unknown): string {
  return btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A token for our wallet with chosen claims, algorithm and key. */
function sign(
  options: { exp?: number; iat?: number; alg?: string; key?: Uint8Array; wid?: string; sub?: string } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ wid: options.wid ?? walletId })
    .setProtectedHeader({ alg: options.alg ?? "HS256", typ: "JWT" })
    .setSubject(options.sub ?? xid)
    .setIssuedAt(options.iat ?? now - 3600)
    .setExpirationTime(options.exp ?? now + 3600)
    .sign(options.key ?? SECRET);
}

async function view(headers: Record<string, string>) {
  return await call(h.app, "GET", "/api/v1/wallet", { headers });
}

async function assert401(headers: Record<string, string>, label: string) {
  const requests = [
    () => call(h.app, "GET", "/api/v1/wallet", { headers }),
    () => call(h.app, "POST", "/api/v1/wallet", { headers }),
    () => call(h.app, "GET", "/api/v1/wallet/transactions", { headers }),
    () => call(h.app, "POST", "/api/v1/wallet/deposits", { headers, body: { amount: 1, reference_id: "r" } }),
    () =>
      call(h.app, "POST", "/api/v1/wallet/withdrawals", { headers, body: { amount: 1, reference_id: "r" } }),
    () => call(h.app, "PATCH", "/api/v1/wallet", { headers, body: { is_disabled: true } }),
  ];
  for (const request of requests) {
    const res = await request();
    assert.equal(res.status, 401, `${label}: ${JSON.stringify(res.body)}`);
    assert.deepEqual(Object.keys(res.body), ["status", "data"]);
    assert.equal(res.body.status, "fail");
    assert.equal(typeof res.body.data.error, "string");
    assert.ok(res.body.data.error.length > 0);
  }
}

describe("auth schemes", () => {
  for (const scheme of ["Token", "Bearer", "token", "bearer", "TOKEN", "BEARER", "BeArEr"]) {
    it(`accepts the ${scheme} scheme`, async () => {
      const res = await view({ authorization: `${scheme} ${token}` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.data.wallet.id, walletId);
    });
  }

  it("a token works for every endpoint through the Bearer scheme", async () => {
    const { token: t } = await enabledWallet(h.app);
    const dep = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token: t,
      scheme: "Bearer",
      body: { amount: 5, reference_id: "b" },
    });
    assert.equal(dep.status, 201);
    const off = await call(h.app, "PATCH", "/api/v1/wallet", {
      token: t,
      scheme: "Bearer",
      body: { is_disabled: true },
    });
    assert.equal(off.status, 200);
  });
});

describe("refused tokens: 401 JSend fail on every authenticated endpoint", () => {
  it("missing Authorization header", async () => {
    await assert401({}, "missing");
  });

  it("malformed headers", async () => {
    for (
      const header of [
        "Token",
        "Bearer",
        "Token ",
        "Basic dXNlcjpwYXNz",
        `Basic ${token}`,
        token,
        `Token${token}`,
        "",
      ]
    ) {
      await assert401(header === "" ? {} : { authorization: header }, JSON.stringify(header));
    }
    await assert401({ authorization: `Token ${token} extra` }, "two tokens");
  });

  it("a garbage token", async () => {
    await assert401({ authorization: "Token garbage" }, "garbage");
    await assert401({ authorization: "Token a.b.c" }, "a.b.c");
  });

  it("a tampered payload or signature", async () => {
    const [header, payload, signature] = token.split(".");
    const claims = decodeJwt(token);
    const otherPayload = b64url({ ...claims, sub: "someone-else" });
    await assert401({ authorization: `Token ${header}.${otherPayload}.${signature}` }, "other payload");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    await assert401({ authorization: `Token ${header}.${flip(payload, 5)}.${signature}` }, "payload char");
    await assert401({ authorization: `Token ${header}.${payload}.${flip(signature, 3)}` }, "signature char");
    await assert401({ authorization: `Token ${header}.${payload}.` }, "no signature");
  });

  it("a token signed with another key", async () => {
    const forged = await sign({ key: new TextEncoder().encode("another-secret-another-secret-123456") });
    await assert401({ authorization: `Token ${forged}` }, "other key");
  });

  it("an alg:none token", async () => {
    const now = Math.floor(Date.now() / 1000);
    const payload = { sub: xid, wid: walletId, iat: now, exp: now + 3600 };
    for (const alg of ["none", "None", "NONE"]) {
      const unsigned = `${b64url({ alg, typ: "JWT" })}.${b64url(payload)}.`;
      await assert401({ authorization: `Token ${unsigned}` }, alg);
      await assert401({ authorization: `Bearer ${unsigned.slice(0, -1)}` }, `${alg} without dot`);
    }
  });

  it("an HS512 token signed with the right secret (the algorithm is fixed)", async () => {
    const other = await sign({ alg: "HS512" });
    await assert401({ authorization: `Token ${other}` }, "HS512");
    const hs384 = await sign({ alg: "HS384" });
    await assert401({ authorization: `Token ${hs384}` }, "HS384");
  });

  it("a token expired 2 minutes ago (past the 60 s leeway)", async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await sign({ exp: now - 120 });
    await assert401({ authorization: `Token ${expired}` }, "expired");
    // the same claims unexpired are fine: the expiry is what refused it
    assert.equal((await view({ authorization: `Token ${await sign({ exp: now + 120 })}` })).status, 200);
  });

  it("a token without the wallet claim or for an unknown wallet", async () => {
    const noWid = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(xid).setIssuedAt()
      .setExpirationTime("1h").sign(SECRET);
    await assert401({ authorization: `Token ${noWid}` }, "no wid");
    const unknown = await sign({ wid: crypto.randomUUID() });
    await assert401({ authorization: `Token ${unknown}` }, "unknown wallet");
    const noExp = await new SignJWT({ wid: walletId }).setProtectedHeader({ alg: "HS256" }).setSubject(xid)
      .setIssuedAt().sign(SECRET);
    await assert401({ authorization: `Token ${noExp}` }, "no exp");
  });
});

describe("token lifetime", () => {
  it("a token expired 30 s ago is still accepted (clock leeway)", async () => {
    const now = Math.floor(Date.now() / 1000);
    const recent = await sign({ exp: now - 30 });
    const res = await view({ authorization: `Token ${recent}` });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.data.wallet.id, walletId);
  });

  it("the init token lasts TOKEN_TTL_SECONDS and names the customer", async () => {
    const customer = newCustomerXid();
    const res = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: customer } });
    assert.equal(res.status, 201);
    const claims = decodeJwt(res.body.data.token);
    assert.equal(claims.sub, customer);
    assert.equal(typeof claims.iat, "number");
    assert.equal(typeof claims.exp, "number");
    assert.equal(claims.exp! - claims.iat!, config.TOKEN_TTL_SECONDS);
    assert.ok(Math.abs(claims.iat! - Date.now() / 1000) < 3600, "iat is about now");
    assert.match(String(claims.wid), /^[0-9a-f-]{36}$/);
  });
});
