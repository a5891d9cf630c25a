/**
 * JSON request bodies: their shape is bounded before `JSON.parse` runs (nesting depth and number of values,
 * counted in one pass over the text), and numbers keep their exact source text (`JsonNumber`), so an amount
 * is judged by what the client wrote, never by the double it would round to.
 */

/** A JSON number as written in the request: `1.10` stays "1.10", `1.0000000000000000001` is not 1. */
export class JsonNumber {
  constructor(readonly source: string) {}
}

/** Why a JSON body was refused before its fields were looked at. */
export class JsonBodyError extends Error {}

/** Limits of a JSON body's shape (our bodies are one flat object of a few fields). */
export interface JsonLimits {
  /** Deepest nesting of arrays and objects; the body object itself is level 1. */
  maxDepth: number;
  /** Most values separated by commas in the whole document. */
  maxValues: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
/** The characters that matter for the shape: found by the regex engine, far faster than a loop over the text. */
const STRUCTURAL = /[{}[\]",]/g;

/**
 * Check depth and number of values in one linear pass; strings are skipped with `indexOf`, so a long string
 * or number costs almost nothing. Syntax is left to `JSON.parse`: this only has to be right for valid JSON,
 * and cheap for anything.
 */
function checkShape(text: string, limits: JsonLimits): void {
  let depth = 0;
  let commas = 0;
  const structural = new RegExp(STRUCTURAL); // its own lastIndex
  for (let match = structural.exec(text); match !== null; match = structural.exec(text)) {
    const code = text.charCodeAt(match.index);
    if (code === QUOTE) {
      let end = text.indexOf('"', match.index + 1);
      while (end !== -1 && isEscaped(text, end)) end = text.indexOf('"', end + 1);
      if (end === -1) return; // unterminated: JSON.parse reports it
      structural.lastIndex = end + 1;
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      depth--;
    } else if (code === COMMA) {
      if (++commas >= limits.maxValues) {
        throw new JsonBodyError(`Request body has too many values: at most ${limits.maxValues}.`);
      }
    } else if (++depth > limits.maxDepth) {
      throw new JsonBodyError(`Request body is nested too deeply: at most ${limits.maxDepth} levels.`);
    }
  }
}

/** Whether the quote at `at` is escaped: preceded by an odd number of backslashes. */
function isEscaped(text: string, at: number): boolean {
  let backslashes = 0;
  while (text.charCodeAt(at - 1 - backslashes) === BACKSLASH) backslashes++;
  return backslashes % 2 === 1;
}

/** Parse a JSON body within `limits`; every number becomes a `JsonNumber`. Throws SyntaxError or JsonBodyError. */
export function parseJsonBody(text: string, limits: JsonLimits): unknown {
  checkShape(text, limits);
  return JSON.parse(text, keepNumberSource);
}

// V8's JSON.parse source text access (TC39 proposal-json-parse-with-source): the reviver gets each primitive's
// text as `context.source`.
function keepNumberSource(_key: string, value: unknown, context?: { source?: string }): unknown {
  return typeof value === "number" && context?.source !== undefined ? new JsonNumber(context.source) : value;
}
