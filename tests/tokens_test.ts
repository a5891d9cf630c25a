import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { createTokenService } from "../src/auth/tokens.ts";

const secret = "unit-test-secret-unit-test-secret-123456";
const subject = { customerXid: "cust-1", walletId: "c4d7d61f-b702-44a8-af97-5dbdafa96551" };

describe("token service", () => {
  it("accepts its own token until expiry plus 60 s of leeway, also once remembered as verified", async () => {
    let clock = Date.parse("2026-11-24T00:00:00Z");
    const tokens = createTokenService({ secret, ttlSeconds: 100, now: () => clock });
    const token = await tokens.issue(subject);
    assert.deepEqual(await tokens.verify(token), subject); // verified and remembered
    clock += 159_000; // 100 s lifetime + 59 s: inside the leeway
    assert.deepEqual(await tokens.verify(token), subject);
    clock += 2_000; // past exp + 60 s
    assert.equal(await tokens.verify(token), null, "a remembered token must still expire");
    assert.equal(await tokens.verify(token), null);
  });

  it("refuses a token signed with another secret even after its own was remembered", async () => {
    const ours = createTokenService({ secret, ttlSeconds: 100 });
    const theirs = createTokenService({ secret: secret.replace("unit", "evil"), ttlSeconds: 100 });
    const token = await theirs.issue(subject);
    assert.deepEqual(await theirs.verify(token), subject);
    assert.equal(await ours.verify(token), null);
  });

  it("issues a distinct token on every call, with exp - iat equal to the lifetime", async () => {
    const tokens = createTokenService({ secret, ttlSeconds: 3600 });
    const [a, b] = await Promise.all([tokens.issue(subject), tokens.issue(subject)]);
    assert.notEqual(a, b);
    const payload = JSON.parse(atob(a.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    assert.equal(payload.exp - payload.iat, 3600);
    assert.equal(payload.sub, subject.customerXid);
  });

  describe("bounds the lifetime of a correctly signed token by the configured one", () => {
    const ttlSeconds = 3600;
    const clock = Date.parse("2026-11-24T00:00:00Z");
    const nowS = clock / 1000;
    const tokens = createTokenService({ secret, ttlSeconds, now: () => clock });
    const key = new TextEncoder().encode(secret);
    /** A token with our secret and chosen iat/exp (undefined: left out) and header. */
    function mint(claims: { iat?: number; exp?: number }, alg = "HS256") {
      const jwt = new SignJWT({ wid: subject.walletId }).setProtectedHeader({ alg, typ: "JWT" })
        .setSubject(subject.customerXid);
      if (claims.iat !== undefined) jwt.setIssuedAt(claims.iat);
      if (claims.exp !== undefined) jwt.setExpirationTime(claims.exp);
      return jwt.sign(key);
    }

    it("accepts exp = iat + lifetime, refuses one second more", async () => {
      assert.deepEqual(await tokens.verify(await mint({ iat: nowS, exp: nowS + ttlSeconds })), subject);
      assert.equal(await tokens.verify(await mint({ iat: nowS, exp: nowS + ttlSeconds + 1 })), null);
    });

    it("refuses an exp in the year 9999", async () => {
      const year9999 = Date.parse("9999-12-31T23:59:59Z") / 1000;
      assert.equal(await tokens.verify(await mint({ iat: nowS, exp: year9999 })), null);
      assert.equal(await tokens.verify(await mint({ iat: year9999 - ttlSeconds, exp: year9999 })), null);
    });

    it("refuses an iat in the future past the leeway, and one older than a lifetime", async () => {
      assert.deepEqual(await tokens.verify(await mint({ iat: nowS + 59, exp: nowS + 59 + 60 })), subject);
      assert.equal(await tokens.verify(await mint({ iat: nowS + 120, exp: nowS + 180 })), null);
      // exp still ahead (it says so), but issued two lifetimes ago: exp - iat is too long anyway.
      assert.equal(await tokens.verify(await mint({ iat: nowS - 2 * ttlSeconds, exp: nowS + 60 })), null);
    });

    it("refuses a token without iat or without exp", async () => {
      assert.equal(await tokens.verify(await mint({ exp: nowS + 60 })), null);
      assert.equal(await tokens.verify(await mint({ iat: nowS })), null);
    });

    it("refuses HS384 and HS512 with the right secret, and alg none", async () => {
      const claims = { iat: nowS, exp: nowS + 60 };
      assert.deepEqual(await tokens.verify(await mint(claims)), subject);
      assert.equal(await tokens.verify(await mint(claims, "HS384")), null);
      assert.equal(await tokens.verify(await mint(claims, "HS512")), null);
      const [, payload] = (await mint(claims)).split(".");
      const none = btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "");
      assert.equal(await tokens.verify(`${none}.${payload}.`), null);
    });

    it("refuses a token longer than 4096 characters before decoding it", async () => {
      const token = await mint({ iat: nowS, exp: nowS + 60 });
      assert.equal(await tokens.verify(token + "A".repeat(4097 - token.length)), null);
    });
  });
});
