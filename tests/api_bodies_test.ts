// deno-lint-ignore-file no-explicit-any -- response bodies are arbitrary JSON; tests assert on their fields
/**
 * Request bodies: multipart/form-data, x-www-form-urlencoded and JSON on every endpoint that takes a body,
 * and the 400/413/415 answers for bodies that are missing, unparsable, too large or of another type.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import {
  call,
  countWrites,
  createHarness,
  dbWallet,
  enabledWallet,
  type Harness,
  initCustomer,
  newCustomerXid,
} from "./support/harness.ts";

const MISSING = "Missing data for required field.";

let h: Harness;
before(() => {
  h = createHarness();
});
after(async () => {
  await h.close();
});

type Format = "multipart" | "urlencoded" | "json" | "json+charset";
const FORMATS: Format[] = ["multipart", "urlencoded", "json", "json+charset"];

/** Encode string fields in one of the accepted formats. */
function encode(
  format: Format,
  fields: Record<string, string>,
): { body: unknown; headers?: Record<string, string> } {
  switch (format) {
    case "multipart": {
      const form = new FormData();
      for (const [k, v] of Object.entries(fields)) form.set(k, v);
      return { body: form };
    }
    case "urlencoded":
      return { body: new URLSearchParams(fields) };
    case "json":
      return { body: fields };
    case "json+charset":
      return { body: JSON.stringify(fields), headers: { "content-type": "application/json; charset=utf-8" } };
  }
}

/** Send raw bytes with exactly the headers given (no content-type is added for a Uint8Array body). */
async function raw(
  method: string,
  path: string,
  body: BodyInit | null,
  headers: Record<string, string> = {},
) {
  const res = await h.app.request(path, { method, headers, body });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* keep the text */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

function assertFail(res: { status: number; body: any }, status: number) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body), ["status", "data"], JSON.stringify(res.body));
  assert.equal(res.body.status, "fail");
  assert.ok(res.body.data.error !== undefined && res.body.data.error !== null);
}

describe("each body format on each endpoint", () => {
  for (const format of FORMATS) {
    it(`${format}: init, enable, deposit, withdraw, disable`, async () => {
      const xid = newCustomerXid();
      const init = await call(h.app, "POST", "/api/v1/init", encode(format, { customer_xid: xid }));
      assert.equal(init.status, 201, JSON.stringify(init.body));
      const token = init.body.data.token;
      assert.equal(decodeJwt(token).sub, xid);
      const enabled = await call(h.app, "POST", "/api/v1/wallet", { token });
      assert.equal(enabled.status, 201);
      const walletId = enabled.body.data.wallet.id;

      const dep = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token,
        ...encode(format, { amount: "0100.50", reference_id: "dep-1" }),
      });
      assert.equal(dep.status, 201, JSON.stringify(dep.body));
      assert.equal(dep.body.data.deposit.amount, 100.5);
      assert.equal(dep.body.data.deposit.reference_id, "dep-1");

      const wd = await call(h.app, "POST", "/api/v1/wallet/withdrawals", {
        token,
        ...encode(format, { amount: "0.5", reference_id: "wd-1" }),
      });
      assert.equal(wd.status, 201, JSON.stringify(wd.body));
      assert.equal(wd.body.data.withdrawal.amount, 0.5);

      const poor = await call(h.app, "POST", "/api/v1/wallet/withdrawals", {
        token,
        ...encode(format, { amount: "1000", reference_id: "wd-2" }),
      });
      assert.equal(poor.status, 400);
      assert.deepEqual(poor.body, { status: "fail", data: { error: "Insufficient balance" } });

      const bad = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token,
        ...encode(format, { amount: "1e3", reference_id: "   " }),
      });
      assert.equal(bad.status, 400);
      assert.deepEqual(Object.keys(bad.body.data.error).sort(), ["amount", "reference_id"]);

      const wrong = await call(h.app, "PATCH", "/api/v1/wallet", {
        token,
        ...encode(format, { is_disabled: "yes" }),
      });
      assert.equal(wrong.status, 400);
      assert.deepEqual(Object.keys(wrong.body.data.error), ["is_disabled"]);

      const off = await call(h.app, "PATCH", "/api/v1/wallet", {
        token,
        ...encode(format, { is_disabled: "True" }),
      });
      assert.equal(off.status, 200, JSON.stringify(off.body));
      assert.equal(off.body.data.wallet.status, "disabled");
      assert.equal(off.body.data.wallet.balance, 100);
      assert.equal((await dbWallet(h.sql, walletId))!.balance, 10000n);
    });

    it(`${format}: unknown fields are ignored and missing fields reported`, async () => {
      const xid = newCustomerXid();
      const init = await call(
        h.app,
        "POST",
        "/api/v1/init",
        encode(format, { customer_xid: xid, extra: "1" }),
      );
      assert.equal(init.status, 201, JSON.stringify(init.body));
      const missing = await call(h.app, "POST", "/api/v1/init", encode(format, { customerXid: xid }));
      assert.equal(missing.status, 400);
      assert.deepEqual(missing.body, { status: "fail", data: { error: { customer_xid: [MISSING] } } });
      const { token } = await enabledWallet(h.app);
      const dep = await call(h.app, "POST", "/api/v1/wallet/deposits", {
        token,
        ...encode(format, { amount: "3", reference_id: "r", note: "hi", id: crypto.randomUUID() }),
      });
      assert.equal(dep.status, 201, JSON.stringify(dep.body));
      assert.deepEqual(Object.keys(dep.body.data.deposit).sort(), [
        "amount",
        "deposited_at",
        "deposited_by",
        "id",
        "reference_id",
        "status",
      ]);
      const none = await call(h.app, "POST", "/api/v1/wallet/withdrawals", {
        token,
        ...encode(format, { unrelated: "x" }),
      });
      assert.equal(none.status, 400);
      assert.deepEqual(none.body, {
        status: "fail",
        data: { error: { amount: [MISSING], reference_id: [MISSING] } },
      });
    });
  }

  it("JSON null fields count as missing", async () => {
    const init = await call(h.app, "POST", "/api/v1/init", { body: { customer_xid: null } });
    assert.deepEqual(init.body, { status: "fail", data: { error: { customer_xid: [MISSING] } } });
    const { token } = await enabledWallet(h.app);
    const dep = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token,
      body: { amount: null, reference_id: null },
    });
    assert.equal(dep.status, 400);
    assert.deepEqual(dep.body, {
      status: "fail",
      data: { error: { amount: [MISSING], reference_id: [MISSING] } },
    });
    const off = await call(h.app, "PATCH", "/api/v1/wallet", { token, body: { is_disabled: null } });
    assert.equal(off.status, 400);
    assert.deepEqual(off.body, { status: "fail", data: { error: { is_disabled: [MISSING] } } });
  });
});

describe("missing bodies", () => {
  it("no body at all is missing fields (400), with or without a content type", async () => {
    const init = await raw("POST", "/api/v1/init", null);
    assert.equal(init.status, 400);
    assert.deepEqual(init.body, { status: "fail", data: { error: { customer_xid: [MISSING] } } });
    const typed = await raw("POST", "/api/v1/init", null, { "content-type": "application/json" });
    assert.deepEqual(typed.body, init.body);
    const { token, walletId } = await enabledWallet(h.app);
    const auth = { authorization: `Token ${token}` };
    for (const path of ["/api/v1/wallet/deposits", "/api/v1/wallet/withdrawals"]) {
      const res = await raw("POST", path, null, auth);
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, {
        status: "fail",
        data: { error: { amount: [MISSING], reference_id: [MISSING] } },
      });
    }
    const off = await raw("PATCH", "/api/v1/wallet", null, auth);
    assert.equal(off.status, 400);
    assert.deepEqual(off.body, { status: "fail", data: { error: { is_disabled: [MISSING] } } });
    const empty = await raw("PATCH", "/api/v1/wallet", "", { ...auth, "content-type": "text/plain" });
    assert.equal(empty.status, 400, "an empty body is a missing body, whatever its type");
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });
});

describe("unsupported, unparsable and oversized bodies", () => {
  let token: string;
  let walletId: string;
  before(async () => {
    ({ token, walletId } = await enabledWallet(h.app));
  });

  const targets = () => [
    { method: "POST", path: "/api/v1/init", auth: {} as Record<string, string> },
    { method: "POST", path: "/api/v1/wallet/deposits", auth: { authorization: `Token ${token}` } },
    { method: "POST", path: "/api/v1/wallet/withdrawals", auth: { authorization: `Token ${token}` } },
    { method: "PATCH", path: "/api/v1/wallet", auth: { authorization: `Token ${token}` } },
  ];

  it("415 for an unsupported media type", async () => {
    for (const { method, path, auth } of targets()) {
      for (
        const type of ["text/plain", "application/xml", "text/json", "application/jsonx", "multipart/mixed"]
      ) {
        const res = await raw(method, path, '{"amount":1,"reference_id":"x","customer_xid":"y"}', {
          ...auth,
          "content-type": type,
        });
        assertFail(res, 415);
      }
    }
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });

  it("415 for a non-empty body without a content type", async () => {
    for (const { method, path, auth } of targets()) {
      const bytes = new TextEncoder().encode('{"amount":1,"reference_id":"x","is_disabled":true}');
      const res = await raw(method, path, bytes, auth);
      assertFail(res, 415);
    }
    assert.equal((await dbWallet(h.sql, walletId))!.status, "enabled");
  });

  it("the media type is compared without parameters and case-insensitively", async () => {
    const xid = newCustomerXid();
    const res = await raw("POST", "/api/v1/init", JSON.stringify({ customer_xid: xid }), {
      "content-type": "Application/JSON; charset=UTF-8",
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(decodeJwt(res.body.data.token).sub, xid);
  });

  it("400 JSend fail for malformed JSON", async () => {
    for (const { method, path, auth } of targets()) {
      for (const text of ['{"amount": 1,', "{amount: 1}", "not json", '{"a":1}}', "\u0000"]) {
        const res = await raw(method, path, text, { ...auth, "content-type": "application/json" });
        assertFail(res, 400);
      }
    }
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });

  it("400 for a JSON body that is not an object (array, string, number, null)", async () => {
    for (const { method, path, auth } of targets()) {
      for (const text of ['[{"amount":1,"reference_id":"x"}]', '"is_disabled=true"', "42", "null", "true"]) {
        const res = await raw(method, path, text, { ...auth, "content-type": "application/json" });
        assertFail(res, 400);
      }
    }
  });

  it("413 JSend fail for a body over 1 MiB, in any format", async () => {
    const big = "x".repeat(1.1 * 1024 * 1024);
    for (const { method, path, auth } of targets()) {
      const json = await raw(
        method,
        path,
        JSON.stringify({ customer_xid: big, reference_id: big, amount: 1 }),
        {
          ...auth,
          "content-type": "application/json",
        },
      );
      assertFail(json, 413);
      const form = new FormData();
      form.set("reference_id", big);
      form.set("amount", "1");
      assertFail(await raw(method, path, form, auth), 413);
      const encoded = new URLSearchParams({ customer_xid: big });
      assertFail(await raw(method, path, encoded, auth), 413);
      // size comes before type
      assertFail(await raw(method, path, big, { ...auth, "content-type": "text/plain" }), 413);
      // a Content-Length over the limit is answered from the header
      const declared = await raw(method, path, big, {
        ...auth,
        "content-type": "application/json",
        "content-length": String(big.length),
      });
      assertFail(declared, 413);
    }
    assert.deepEqual(await countWrites(h.sql, walletId), { transactions: 0, outbox: 1 });
  });

  it("a body just under 1 MiB is accepted and validated", async () => {
    const padding = "p".repeat(1024 * 1024 - 200);
    const res = await raw(
      "POST",
      "/api/v1/wallet/deposits",
      JSON.stringify({ amount: 2, reference_id: "under-limit", padding }),
      { authorization: `Token ${token}`, "content-type": "application/json" },
    );
    assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
    assert.equal(res.body.data.deposit.amount, 2);
  });

  it("400 for a malformed multipart body", async () => {
    const { token: t } = await initCustomer(h.app);
    const res = await raw("POST", "/api/v1/wallet/deposits", "--nope\r\ngarbage", {
      authorization: `Token ${t}`,
      "content-type": "multipart/form-data; boundary=abc",
    });
    assertFail(res, 400);
  });
});

describe("media types with parameters (RFC 9110)", () => {
  it("every accepted media type is accepted with any parameters and optional whitespace around ';'", async () => {
    const { token } = await enabledWallet(h.app);
    const auth = { authorization: `Token ${token}` };
    const multipart = (ref: string) =>
      `--XyZ\r\nContent-Disposition: form-data; name="amount"\r\n\r\n1.50\r\n` +
      `--XyZ\r\nContent-Disposition: form-data; name="reference_id"\r\n\r\n${ref}\r\n--XyZ--\r\n`;
    const cases: Array<[string, (ref: string) => string]> = [
      ["application/json ; charset=utf-8", (ref) => JSON.stringify({ amount: "1.50", reference_id: ref })],
      ["application/json;", (ref) => JSON.stringify({ amount: "1.50", reference_id: ref })],
      ["application/json\t;\tcharset=UTF-8;", (ref) => JSON.stringify({ amount: "1.50", reference_id: ref })],
      [
        'APPLICATION/JSON; charset="utf-8"; x=1',
        (ref) => JSON.stringify({ amount: "1.50", reference_id: ref }),
      ],
      ["application/x-www-form-urlencoded ; charset=UTF-8", (ref) => `amount=1.50&reference_id=${ref}`],
      ["application/x-www-form-urlencoded;", (ref) => `amount=1.50&reference_id=${ref}`],
      ["multipart/form-data; charset=utf-8; boundary=XyZ", multipart],
      ['multipart/form-data ; boundary="XyZ" ;', multipart],
      ["Multipart/Form-Data;boundary=XyZ;charset=utf-8", multipart],
    ];
    for (const [type, body] of cases) {
      const res = await raw("POST", "/api/v1/wallet/deposits", body(crypto.randomUUID()), {
        ...auth,
        "content-type": type,
      });
      assert.equal(res.status, 201, `${type}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.data.deposit.amount, 1.5);
    }
  });

  it("anything else gets one 415 with one message, whatever the endpoint; nothing is written", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const before = await countWrites(h.sql, walletId);
    const messages = new Set<string>();
    for (
      const type of [
        "application/json x",
        "application/json; charset",
        "application /json",
        "text/plain; charset=utf-8",
        "application/json, text/plain",
        "form-data",
      ]
    ) {
      for (const path of ["/api/v1/init", "/api/v1/wallet/deposits"]) {
        const res = await raw("POST", path, '{"amount":"1","reference_id":"x","customer_xid":"y"}', {
          authorization: `Token ${token}`,
          "content-type": type,
        });
        assertFail(res, 415);
        messages.add(res.body.data.error);
      }
    }
    assert.deepEqual([...messages], [
      "Unsupported Content-Type: send multipart/form-data, application/x-www-form-urlencoded, application/json.",
    ]);
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });
});

describe("JSON amounts are judged by their exact text", () => {
  it("refuses numbers a double would round into valid amounts; writes nothing", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const before = await countWrites(h.sql, walletId);
    for (
      const amount of [
        "999999999999.999999",
        "1.0000000000000000001",
        "1.001",
        "0.1000000000000000055511151231257827",
        "1e2",
        "1E2",
        "100e-2",
        "-1",
        "-0",
        "1000000000000.001",
        "9".repeat(400),
      ]
    ) {
      const res = await raw(
        "POST",
        "/api/v1/wallet/deposits",
        `{"amount":${amount},"reference_id":"${crypto.randomUUID()}"}`,
        { authorization: `Token ${token}`, "content-type": "application/json" },
      );
      assert.equal(res.status, 400, `${amount}: ${JSON.stringify(res.body)}`);
      assert.deepEqual(Object.keys(res.body.data.error), ["amount"], amount);
    }
    assert.deepEqual(await countWrites(h.sql, walletId), before);
    assert.equal((await dbWallet(h.sql, walletId))!.balance, 0n);
  });

  it("accepts the same texts a form may send, by value", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const accepted: Array<[string, bigint]> = [
      ["1.50", 150n],
      ["1.500000000000000000000", 150n],
      ["100.10", 10010n],
      ["999999999999.99", 99999999999999n],
      ["0.01", 1n],
    ];
    let total = 0n;
    for (const [amount, cents] of accepted) {
      const res = await raw(
        "POST",
        "/api/v1/wallet/deposits",
        `{"amount":${amount},"reference_id":"${crypto.randomUUID()}"}`,
        { authorization: `Token ${token}`, "content-type": "application/json" },
      );
      assert.equal(res.status, 201, `${amount}: ${JSON.stringify(res.body)}`);
      total += cents;
    }
    assert.equal((await dbWallet(h.sql, walletId))!.balance, total);
  });
});

describe("multipart bodies must be complete", () => {
  it("a body cut off before its closing boundary, or malformed, is 400 JSend and writes nothing", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const before = await countWrites(h.sql, walletId);
    const complete = `--XyZ\r\nContent-Disposition: form-data; name="amount"\r\n\r\n5\r\n` +
      `--XyZ\r\nContent-Disposition: form-data; name="reference_id"\r\n\r\ncut-1\r\n--XyZ--\r\n`;
    const bodies = [
      complete.slice(0, complete.lastIndexOf("--XyZ--")), // the unfinished last part was dropped on main
      complete.slice(0, complete.lastIndexOf("--XyZ--") + 5),
      complete.slice(0, complete.indexOf("cut-1") + 3),
      complete.replace('form-data; name="amount"', "form-data"), // a part without a name
      `garbage before the boundary\r\n${complete}`,
    ];
    for (const body of bodies) {
      for (const path of ["/api/v1/wallet/deposits", "/api/v1/wallet/withdrawals"]) {
        const res = await raw("POST", path, body, {
          authorization: `Token ${token}`,
          "content-type": "multipart/form-data; boundary=XyZ",
        });
        assertFail(res, 400);
        assert.equal(typeof res.body.data.error, "string");
      }
    }
    const noBoundary = await raw("POST", "/api/v1/wallet/deposits", complete, {
      authorization: `Token ${token}`,
      "content-type": "multipart/form-data",
    });
    assertFail(noBoundary, 400);
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });
});

describe("bodies are cheap to refuse: shape limits before the expensive parse", () => {
  it("deep nesting, too many values, fields or parts, and a 1 MiB amount: 400 JSend, nothing written", async () => {
    const { token, walletId } = await enabledWallet(h.app);
    const before = await countWrites(h.sql, walletId);
    const auth = { authorization: `Token ${token}` };
    const depth = 500_000;
    const parts = Array.from(
      { length: 10_000 },
      (_, i) => `--XyZ\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\n${i}\r\n`,
    ).join("") + "--XyZ--\r\n";
    const cases: Array<[string, string, RegExp]> = [
      [
        "application/json",
        `{"amount":${"[".repeat(depth)}${"]".repeat(depth)},"reference_id":"r"}`,
        /nested too deeply/,
      ],
      ["application/json", `{${'"a":1,'.repeat(100_000)}"amount":1,"reference_id":"r"}`, /too many values/],
      [
        "application/x-www-form-urlencoded",
        `amount=1&reference_id=r&${"a=1&".repeat(200_000)}`,
        /too many fields/,
      ],
      ["multipart/form-data; boundary=XyZ", parts, /too many fields/],
    ];
    for (const [type, body, message] of cases) {
      const res = await raw("POST", "/api/v1/wallet/deposits", body, { ...auth, "content-type": type });
      assertFail(res, 400);
      assert.match(res.body.data.error, message);
    }
    for (const amount of [`"${"9".repeat(1_000_000)}"`, "9".repeat(1_000_000)]) {
      const res = await raw("POST", "/api/v1/wallet/deposits", `{"amount":${amount},"reference_id":"r"}`, {
        ...auth,
        "content-type": "application/json",
      });
      assert.equal(res.status, 400);
      assert.deepEqual(res.body.data.error, { amount: ["Must be at most 1000000000000."] });
    }
    const longId = await raw(
      "POST",
      "/api/v1/wallet/deposits",
      `amount=1&reference_id=${"r".repeat(1_000_000)}`,
      {
        ...auth,
        "content-type": "application/x-www-form-urlencoded",
      },
    );
    assert.deepEqual(longId.body.data.error, { reference_id: ["Must be at most 64 characters."] });
    assert.deepEqual(await countWrites(h.sql, walletId), before);
  });

  it("a plain body of up to 100 fields at 8 levels is still accepted", async () => {
    const { token } = await enabledWallet(h.app);
    const extra = Object.fromEntries(Array.from({ length: 97 }, (_, i) => [`x${i}`, [[[[[[[i]]]]]]]]));
    const res = await call(h.app, "POST", "/api/v1/wallet/deposits", {
      token,
      body: { ...extra, amount: 1, reference_id: crypto.randomUUID() },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
  });
});
