/**
 * Authentication: `Token` and `Bearer` schemes, and every way a token can be wrong: 401 JSend fail on every
 * authenticated endpoint, and nothing written (every table's row count and the wallet row unchanged).
 */
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

/** The 401 messages of src/http/auth.ts (the contract fixes the status and JSend shape, not the words). */
const MESSAGES_401 = [
  "Missing Authorization header: send 'Token <token>' from POST /api/v1/init.",
  "Malformed Authorization header: expected 'Token <token>' or 'Bearer <token>'.",
  "Invalid or expired token.",
];

/** Every table's row count and our wallet row: what a refused request must leave as it found. */
async function snapshot() {
  const tables = await h.sql<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables
    WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`;
  assert.ok(tables.some((t) => t.name === "wallet_transactions"), "the snapshot sees the ledger");
  const counts: Record<string, number> = {};
  for (const { name } of tables) {
    const [row] = await h.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM ${h.sql(name)}`;
    counts[name] = row.n;
  }
  const [wallet] = await h
    .sql`SELECT status, balance::text, version::text FROM wallets WHERE id = ${walletId}`;
  return { counts, wallet };
}

async function assert401(headers: Record<string, string>, label: string) {
  const before = await snapshot();
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
    assert.ok(MESSAGES_401.includes(res.body.data.error), `${label}: ${res.body.data.error}`);
  }
  assert.deepEqual(await snapshot(), before, `${label}: a refused request wrote something`);
}

describe("auth schemes", () => {
  // RFC 9110: the scheme is case-insensitive.
  for (const scheme of ["Token", "Bearer", "token", "bearer", "TOKEN", "BEARER", "BeArEr"]) {
    it(`accepts the ${scheme} scheme`, async () => {
      const res = await view({ authorization: `${scheme} ${token}` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.data.wallet.id, walletId);
    });
  }

  it("accepts several spaces after the scheme (RFC 9110: `auth-scheme 1*SP token68`)", async () => {
    for (const authorization of [`Token  ${token}`, `Bearer   ${token}`]) {
      assert.equal((await view({ authorization })).status, 200, authorization.slice(0, 12));
    }
  });

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
    await assert401({ authorization: `Token\t${token}` }, "a tab instead of spaces");
    await assert401({ authorization: `Token "${token}"` }, "a quoted token");
    await assert401({ authorization: `Token ${token},Bearer ${token}` }, "two credentials");
    await assert401({ authorization: `JWT ${token}` }, "another scheme");
    await assert401({ authorization: `Tokens ${token}` }, "a longer scheme name");
  });

  it("a very long header: 64 KiB of token characters, and a signed token with a 64 KiB claim", async () => {
    await assert401({ authorization: `Bearer ${"a".repeat(64 * 1024)}` }, "64 KiB garbage");
    const big = await new SignJWT({ wid: walletId, pad: "x".repeat(64 * 1024) })
      .setProtectedHeader({ alg: "HS256" }).setSubject(xid).setIssuedAt().setExpirationTime("1h").sign(
        SECRET,
      );
    await assert401({ authorization: `Bearer ${big}` }, "64 KiB signed token");
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

  it("a token whose exp lies past iat + TOKEN_TTL_SECONDS, in the year 9999, or whose iat is ahead", async () => {
    const now = Math.floor(Date.now() / 1000);
    const ttl = config.TOKEN_TTL_SECONDS;
    await assert401(
      { authorization: `Token ${await sign({ iat: now, exp: now + ttl + 1 })}` },
      "exp too far",
    );
    const year9999 = Math.floor(Date.parse("9999-12-31T23:59:59Z") / 1000);
    await assert401({ authorization: `Token ${await sign({ iat: now, exp: year9999 })}` }, "exp in 9999");
    await assert401(
      { authorization: `Token ${await sign({ iat: now + 600, exp: now + 700 })}` },
      "iat ahead",
    );
    // exactly one lifetime is what init issues, and is accepted
    assert.equal(
      (await view({ authorization: `Token ${await sign({ iat: now, exp: now + ttl })}` })).status,
      200,
    );
  });

  it("a token without iat", async () => {
    const noIat = await new SignJWT({ wid: walletId }).setProtectedHeader({ alg: "HS256" }).setSubject(xid)
      .setExpirationTime("1h").sign(SECRET);
    await assert401({ authorization: `Token ${noIat}` }, "no iat");
  });

  it("a valid token for a customer never initialized", async () => {
    const stranger = await sign({ sub: newCustomerXid(), wid: crypto.randomUUID() });
    await assert401({ authorization: `Token ${stranger}` }, "never initialized");
    await assert401({ authorization: `Bearer ${stranger}` }, "never initialized, Bearer");
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
