/**
 * Form request bodies (x-www-form-urlencoded and multipart/form-data) into an object of fields. A field sent
 * more than once becomes an array (which no field schema accepts), like Hono's form validator does. The number
 * of fields is counted before anything is decoded, and a multipart body must be complete: cut off before its
 * closing boundary, or malformed anywhere, it is refused whole.
 */
import { MultipartParseError, parseMultipart } from "@remix-run/multipart-parser";

/** Why a form body was refused: the message says what to fix. */
export class FormBodyError extends Error {}

/** What a form body may hold. */
export interface FormLimits {
  /** Most fields (pairs or parts). */
  maxFields: number;
}

/** A file part of a multipart body: fields are text, so it is kept only to be refused by name. */
export type FormValue = string | Blob;
export type FormFields = Record<string, FormValue | FormValue[]>;

const utf8 = new TextDecoder("utf-8", { fatal: true }); // invalid UTF-8 is a broken body (400)

function addField(fields: FormFields, name: string, value: FormValue): void {
  if (!Object.hasOwn(fields, name)) fields[name] = value;
  else {
    const earlier = fields[name];
    fields[name] = Array.isArray(earlier) ? [...earlier, value] : [earlier, value];
  }
}

function tooMany(limits: FormLimits): FormBodyError {
  return new FormBodyError(`Request body has too many fields: at most ${limits.maxFields}.`);
}

/** Parse an x-www-form-urlencoded body. */
export function parseUrlencoded(body: Uint8Array, limits: FormLimits): FormFields {
  const text = utf8.decode(body);
  // Count the separators first: URLSearchParams would decode every pair of a body of 130,000.
  let separators = 0;
  for (let at = text.indexOf("&"); at !== -1; at = text.indexOf("&", at + 1)) {
    if (++separators >= limits.maxFields) throw tooMany(limits);
  }
  const fields: FormFields = Object.create(null);
  for (const [name, value] of new URLSearchParams(text)) addField(fields, name, value);
  return fields;
}

/** Parse a multipart/form-data body with the `boundary` of its Content-Type. */
export function parseMultipartForm(
  body: Uint8Array,
  boundary: string | undefined,
  limits: FormLimits,
): FormFields {
  // RFC 2046: 1 to 70 characters, the last not a space.
  if (boundary === undefined || !/^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) {
    throw new FormBodyError("Request body is not valid form data: its Content-Type needs a valid boundary.");
  }
  const fields: FormFields = Object.create(null);
  try {
    // The parser stops at the part over the limit, before looking at the rest, and throws on a body that does
    // not start with the boundary or ends before the closing one.
    for (
      const part of parseMultipart(body, { boundary, maxParts: limits.maxFields, maxFileSize: body.length })
    ) {
      const name = part.name;
      if (name === undefined) {
        throw new FormBodyError("Request body is not valid form data: a part has no name.");
      }
      addField(fields, name, part.isFile ? new Blob(part.content as Uint8Array<ArrayBuffer>[]) : part.text);
    }
  } catch (error) {
    if (error instanceof MultipartParseError && error.name === "MaxPartsExceededError") throw tooMany(limits);
    if (error instanceof MultipartParseError || error instanceof TypeError) {
      throw new FormBodyError("Request body is not valid form data: it is malformed or incomplete.");
    }
    throw error;
  }
  return fields;
}
