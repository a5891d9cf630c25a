import { describe, it } from "node:test";
import assert from "node:assert/strict";
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
});
