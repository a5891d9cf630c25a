/**
 * Unit tests of the body parsers under src/http/: media types by RFC 9110, JSON with exact number text and
 * shape limits, and form bodies (urlencoded and multipart) with field limits and complete multipart only.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseMediaType } from "../src/http/media_type.ts";
import { JsonBodyError, JsonNumber, parseJsonBody } from "../src/http/json_fields.ts";
import { FormBodyError, parseMultipartForm, parseUrlencoded } from "../src/http/form_fields.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const LIMITS = { maxDepth: 4, maxValues: 5 };

describe("parseMediaType", () => {
  it("takes any parameters, the optional whitespace around ';' and an empty parameter", () => {
    for (
      const value of [
        "application/json",
        "Application/JSON",
        "application/json;charset=utf-8",
        "application/json ; charset=utf-8",
        "application/json\t;\tcharset=UTF-8",
        "application/json;",
        "application/json; ;charset=utf-8;",
        'application/json; charset="utf-8"; x-other=1',
        "  application/json  ",
      ]
    ) {
      assert.equal(parseMediaType(value)?.essence, "application/json", JSON.stringify(value));
    }
  });

  it("reads parameters case-insensitively by name, quoted strings unquoted, the first one winning", () => {
    const type = parseMediaType('multipart/form-data; charset=utf-8; BOUNDARY="a b\\"c"; boundary=second');
    assert.equal(type?.essence, "multipart/form-data");
    assert.equal(type?.params.get("boundary"), 'a b"c');
    assert.equal(type?.params.get("charset"), "utf-8");
  });

  it("refuses what is not a media type by RFC 9110", () => {
    for (
      const value of [
        "",
        "json",
        "application/",
        "application /json",
        "application/ json",
        "application/json x",
        "application/json; charset",
        "application/json; charset =utf-8",
        "application/json; charset= utf-8",
        'application/json; charset="utf-8',
        "application/json\u00a0",
        "application/json,text/plain",
        `application/json${" ".repeat(100_000)}x`, // and not in quadratic time
      ]
    ) {
      assert.equal(parseMediaType(value), null, JSON.stringify(value));
    }
  });
});

describe("parseJsonBody", () => {
  it("keeps every number's source text (V8's JSON.parse source text access)", () => {
    const body = parseJsonBody('{"a":1.50,"b":[1e2,-0.0],"c":"1.5","d":999999999999.999999}', LIMITS);
    assert.deepEqual(body, {
      a: new JsonNumber("1.50"),
      b: [new JsonNumber("1e2"), new JsonNumber("-0.0")],
      c: "1.5",
      d: new JsonNumber("999999999999.999999"),
    });
  });

  it("refuses nesting deeper than the limit, before parsing", () => {
    assert.doesNotThrow(() => parseJsonBody('{"a":[[{"b":1}]]}', LIMITS));
    assert.throws(() => parseJsonBody('{"a":[[[{"b":1}]]]}', LIMITS), JsonBodyError);
    // 500,000 levels: the shape check stops at the fifth
    assert.throws(() => parseJsonBody("[".repeat(500_000) + "]".repeat(500_000), LIMITS), JsonBodyError);
    // even when the text is not JSON at all
    assert.throws(() => parseJsonBody("[[[[[ not json", LIMITS), /nested too deeply/);
  });

  it("refuses more values than the limit, counting commas outside strings only", () => {
    assert.doesNotThrow(() => parseJsonBody("[1,2,3,4,5]", LIMITS));
    assert.throws(() => parseJsonBody("[1,2,3,4,5,6]", LIMITS), /too many values: at most 5/);
    assert.throws(() => parseJsonBody(`{${'"a":1,'.repeat(130_000)}"b":2}`, LIMITS), JsonBodyError);
    assert.deepEqual(parseJsonBody('{"a":",,,,,,,[[[[[{{{{{"}', LIMITS), { a: ",,,,,,,[[[[[{{{{{" });
  });

  it("skips escaped quotes inside strings", () => {
    assert.deepEqual(parseJsonBody('{"a":"\\"[[[[[,,,,,,\\\\"}', LIMITS), { a: '"[[[[[,,,,,,\\' });
    assert.throws(() => parseJsonBody('{"a":"\\\\",,,,,,,}', LIMITS), JsonBodyError);
  });

  it("leaves syntax errors to JSON.parse", () => {
    for (const text of ['{"a":', '{"a":"open', "{a:1}", "[1,]", "", "\u0000"]) {
      assert.throws(() => parseJsonBody(text, LIMITS), SyntaxError, JSON.stringify(text));
    }
  });
});

describe("parseUrlencoded", () => {
  it("decodes fields; a repeated field becomes an array", () => {
    const fields = parseUrlencoded(encode("amount=1.5&reference_id=a%20b&amount=2&x=%E2%82%AC+1"), {
      maxFields: 5,
    });
    assert.deepEqual({ ...fields }, { amount: ["1.5", "2"], reference_id: "a b", x: "€ 1" });
  });

  it("refuses more pairs than the limit before decoding any", () => {
    assert.doesNotThrow(() => parseUrlencoded(encode("a=1&b=2&c=3"), { maxFields: 3 }));
    assert.throws(() => parseUrlencoded(encode("a=1&b=2&c=3&d=4"), { maxFields: 3 }), FormBodyError);
    assert.throws(
      () => parseUrlencoded(encode("a=1&".repeat(130_000)), { maxFields: 100 }),
      /too many fields/,
    );
  });

  it("refuses invalid UTF-8", () => {
    assert.throws(() => parseUrlencoded(new Uint8Array([0x61, 0x3d, 0xff]), { maxFields: 3 }), TypeError);
  });
});

describe("parseMultipartForm", () => {
  const part = (name: string, value: string, extra = "") =>
    `--XyZ\r\nContent-Disposition: form-data; name="${name}"${extra}\r\n\r\n${value}\r\n`;
  const complete = part("amount", "1.5") + part("reference_id", "r-1") + part("amount", "2") + "--XyZ--\r\n";

  it("reads text fields; a repeated field becomes an array and a file part is not text", () => {
    const fields = parseMultipartForm(
      encode(complete + "epilogue is ignored"),
      "XyZ",
      { maxFields: 5 },
    );
    assert.deepEqual({ ...fields }, { amount: ["1.5", "2"], reference_id: "r-1" });
    const file = parseMultipartForm(
      encode(part("reference_id", "r", '; filename="a.txt"') + "--XyZ--"),
      "XyZ",
      { maxFields: 5 },
    );
    assert.ok(file.reference_id instanceof Blob);
  });

  it("refuses a body cut off anywhere before its closing boundary", () => {
    const bytes = encode(complete);
    const end = complete.lastIndexOf("--XyZ--") + "--XyZ--".length;
    for (let cut = 1; cut < end; cut++) { // 0 bytes: no body, never parsed
      assert.throws(
        () => parseMultipartForm(bytes.subarray(0, cut), "XyZ", { maxFields: 5 }),
        FormBodyError,
        `cut at ${cut}`,
      );
    }
  });

  it("refuses a missing or invalid boundary, a wrong boundary, a part without a name and invalid UTF-8", () => {
    const limits = { maxFields: 5 };
    assert.throws(() => parseMultipartForm(encode(complete), undefined, limits), /boundary/);
    assert.throws(() => parseMultipartForm(encode(complete), "", limits), /boundary/);
    assert.throws(() => parseMultipartForm(encode(complete), "x".repeat(71), limits), /boundary/);
    assert.throws(() => parseMultipartForm(encode(complete), "other", limits), FormBodyError);
    const unnamed = "--XyZ\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XyZ--";
    assert.throws(() => parseMultipartForm(encode(unnamed), "XyZ", limits), /has no name/);
    const broken = new Uint8Array([...encode(part("a", "")).subarray(0, -2), 0xff, ...encode("\r\n--XyZ--")]);
    assert.throws(() => parseMultipartForm(broken, "XyZ", limits), FormBodyError);
  });

  it("refuses more parts than the limit", () => {
    assert.throws(
      () => parseMultipartForm(encode(part("a", "1").repeat(10_000) + "--XyZ--"), "XyZ", { maxFields: 100 }),
      /too many fields: at most 100/,
    );
  });
});
