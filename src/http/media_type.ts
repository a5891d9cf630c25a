/**
 * `Content-Type` parsing by RFC 9110 (section 8.3.1): `type "/" subtype *( OWS ";" OWS [ parameter ] )`, where
 * a parameter is `token "=" ( token / quoted-string )` and OWS is spaces and tabs. Type, subtype and parameter
 * names compare case-insensitively; parameter values are kept as sent (a quoted-string unquoted).
 */

/** A parsed media type: `essence` is `type/subtype` lower-cased; parameter names are lower-cased too. */
export interface MediaType {
  essence: string;
  params: Map<string, string>;
}

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const QUOTED = '"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"';
const ESSENCE = new RegExp(`^(${TOKEN})/(${TOKEN})`);
// One `OWS ";" OWS [ parameter ]`, anchored where the previous one ended (sticky).
const PARAMETER = new RegExp(`[\\t ]*;[\\t ]*(?:(${TOKEN})=(${TOKEN}|${QUOTED}))?`, "y");

/**
 * `value` without leading and trailing spaces and tabs. Headers strip them already; a value given some other
 * way may still carry them. Not a regex: `/[\t ]+$/` tries every start of a long run of spaces (quadratic).
 */
function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  return value.slice(start, end);
}

function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** The media type of a `Content-Type` value, or null when it is not one (RFC 9110 syntax). */
export function parseMediaType(value: string): MediaType | null {
  const text = trimOws(value);
  const essence = ESSENCE.exec(text);
  if (!essence) return null;
  const params = new Map<string, string>();
  let at = essence[0].length;
  while (at < text.length) {
    PARAMETER.lastIndex = at;
    const match = PARAMETER.exec(text);
    if (!match || match[0].length === 0) return null;
    at = PARAMETER.lastIndex;
    const [, name, raw] = match;
    if (name === undefined) continue; // an empty parameter (`a/b;;`) is allowed
    const key = name.toLowerCase();
    // The first occurrence of a parameter wins; a quoted value loses its quotes and escapes.
    if (!params.has(key)) {
      params.set(key, raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, "$1") : raw);
    }
  }
  return { essence: `${essence[1]}/${essence[2]}`.toLowerCase(), params };
}
