/**
 * The zod schemas of every request and response: they validate requests and generate /openapi.json, so the
 * documentation cannot drift from what the service accepts.
 */
import { z } from "@hono/zod-openapi";
import { AMOUNT_INVALID, parseAmount } from "../wallet/money.ts";
import { JsonNumber } from "./json_fields.ts";

export const MISSING = "Missing data for required field.";
const MAX_ID_LENGTH = 64;

/** An opaque, non-blank id of at most 64 Unicode code points. */
function opaqueId(example: string) {
  return z.string({ error: (issue) => issue.input == null ? MISSING : "Must be a string." })
    .superRefine((value, ctx) => {
      const problem = opaqueIdProblem(value);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    })
    .openapi({ example, maxLength: MAX_ID_LENGTH });
}

/** What is wrong with an opaque id, first things first; the length is judged before the text is scanned. */
function opaqueIdProblem(value: string): string | undefined {
  // UTF-16 units are 1 or 2 per code point: only a length in between needs counting, and 128 units at most.
  if (
    value.length > 2 * MAX_ID_LENGTH || (value.length > MAX_ID_LENGTH && [...value].length > MAX_ID_LENGTH)
  ) {
    return `Must be at most ${MAX_ID_LENGTH} characters.`;
  }
  if (value.trim().length === 0) return "Must not be blank.";
  // PostgreSQL text holds neither NUL nor lone surrogates (they would become U+FFFD and collide).
  if (!value.isWellFormed() || value.includes("\u0000")) return "Must be valid Unicode text without NUL.";
}

/** A JSON number of a request body, with the text the client wrote (see json_fields.ts). */
const jsonNumber = z.custom<JsonNumber>((value) => value instanceof JsonNumber).openapi({ type: "number" });

/** An amount's decimal text: a JSON number's source, or a form value (the same rules for both). */
export function amountText(value: JsonNumber | string): string {
  return value instanceof JsonNumber ? value.source : value;
}

const amount = z.union([jsonNumber, z.string()], {
  error: (issue) => issue.input == null ? MISSING : AMOUNT_INVALID,
}).superRefine((value, ctx) => {
  const parsed = parseAmount(amountText(value));
  if ("error" in parsed) ctx.addIssue({ code: "custom", message: parsed.error });
}).openapi({
  description:
    "Positive, at most 2 decimal places, at most 1000000000000. A JSON number or a decimal string.",
  example: "100000",
});

export const initBodySchema = z.object({ customer_xid: opaqueId("ea0212d3-abd6-406f-8c67-868e814a2436") })
  .openapi("InitRequest");

export const moneyBodySchema = z.object({
  amount,
  reference_id: opaqueId("50535246-dcb2-4929-8cc9-004ea06f5241"),
}).openapi("MoneyRequest");

export const disableBodySchema = z.object({
  is_disabled: z.union([z.boolean(), z.string()], {
    error: (issue) => issue.input == null ? MISSING : "Must be true.",
  }).refine(
    (value) => value === true || (typeof value === "string" && value.toLowerCase() === "true"),
    "Must be true.",
  )
    .openapi({ description: '`true`, or the string "true" (any case).', example: "true" }),
}).openapi("DisableRequest");

export const MAX_PAGE = 1000;

/** A query parameter given at most once (`?limit=1&limit=2` is refused with a message of our own). */
const queryParam = () => z.string({ error: "Must be given once." });

export const transactionsQuerySchema = z.object({
  limit: queryParam().regex(/^\d{1,4}$/, `Must be a whole number from 1 to ${MAX_PAGE}.`)
    .refine((v) => Number(v) >= 1 && Number(v) <= MAX_PAGE, `Must be a whole number from 1 to ${MAX_PAGE}.`)
    .optional().openapi({
      description: "Page size (1 to 1000). Without it, every transaction.",
      example: "50",
    }),
  cursor: queryParam().regex(/^[1-9]\d{0,18}$/, "Must be a cursor returned by an earlier page.")
    // zod runs this even when the regex failed: compare only digit strings (bigint range of seq)
    .refine(
      (v) => !/^\d+$/.test(v) || BigInt(v) <= 9223372036854775807n,
      "Must be a cursor returned by an earlier page.",
    )
    .optional()
    .openapi({ description: "`next_cursor` of the previous page; requires `limit`." }),
}).superRefine((query, ctx) => {
  if (query.cursor !== undefined && query.limit === undefined) {
    ctx.addIssue({ code: "custom", path: ["cursor"], message: "Requires limit." });
  }
});

// ---- Responses ----

const timestamp = z.string().openapi({ example: "2026-11-24T04:36:14.123Z", format: "date-time" });
const uuid = z.string().openapi({ example: "c4d7d61f-b702-44a8-af97-5dbdafa96551", format: "uuid" });
const money = z.number().openapi({ example: 100000 });

export const tokenDataSchema = z.object({
  token: z.string().openapi({ example: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..." }),
});

export const enabledWalletSchema = z.object({
  id: uuid,
  owned_by: z.string().openapi({ example: "ea0212d3-abd6-406f-8c67-868e814a2436" }),
  status: z.literal("enabled"),
  enabled_at: timestamp,
  balance: money,
}).openapi("EnabledWallet");

export const disabledWalletSchema = z.object({
  id: uuid,
  owned_by: z.string(),
  status: z.literal("disabled"),
  disabled_at: timestamp,
  balance: money,
}).openapi("DisabledWallet");

export const transactionSchema = z.object({
  id: uuid,
  status: z.enum(["success", "failed"]),
  transacted_at: timestamp,
  type: z.enum(["deposit", "withdrawal"]),
  amount: money,
  reference_id: z.string(),
}).openapi("Transaction");

export const depositSchema = z.object({
  id: uuid,
  deposited_by: z.string(),
  status: z.literal("success"),
  deposited_at: timestamp,
  amount: money,
  reference_id: z.string(),
}).openapi("Deposit");

export const withdrawalSchema = z.object({
  id: uuid,
  withdrawn_by: z.string(),
  status: z.literal("success"),
  withdrawn_at: timestamp,
  amount: money,
  reference_id: z.string(),
}).openapi("Withdrawal");

/** `{"status":"success","data":...}` */
export function successSchema<T extends z.ZodType>(data: T) {
  return z.object({ status: z.literal("success"), data });
}

const failError = z.union([z.string(), z.record(z.string(), z.array(z.string()))]);

/** `{"status":"fail","data":{"error":...}}` with an example from the contract. */
export function failSchema(example: string | Record<string, string[]>) {
  return z.object({ status: z.literal("fail"), data: z.object({ error: failError }) })
    .openapi({ example: { status: "fail", data: { error: example } } });
}

export const errorSchema = z.object({ status: z.literal("error"), message: z.string() })
  .openapi("Error", { example: { status: "error", message: "Internal server error" } });
