/**
 * The wallet event: the JSON message the outbox relay publishes to Kafka and the consumer applies to the
 * balance cache. Documented in docs/events.md; bump EVENT_SCHEMA_VERSION on any incompatible change.
 */
import { z } from "zod";

export const EVENT_SCHEMA_VERSION = 1;

export const EVENT_TYPES = [
  "wallet.enabled",
  "wallet.disabled",
  "deposit.succeeded",
  "withdrawal.succeeded",
  "withdrawal.failed",
] as const;
export type WalletEventType = typeof EVENT_TYPES[number];

const decimal = z.string().regex(/^\d+(\.\d{1,2})?$/);
const timestamp = z.iso.datetime({ offset: true });
// Any 8-4-4-4-12 hex id, as PostgreSQL's uuid type accepts: wallets imported from elsewhere need not carry
// RFC 9562 version and variant bits, and z.uuid() would set their events aside as malformed.
const id = z.guid();

/** Validates an incoming event; the consumer sets aside anything that does not match. */
export const walletEventSchema = z.object({
  schema_version: z.literal(EVENT_SCHEMA_VERSION),
  event_id: id,
  type: z.enum(EVENT_TYPES),
  wallet_id: id,
  customer_xid: z.string().min(1),
  version: z.number().int().positive(),
  wallet_status: z.enum(["enabled", "disabled"]),
  enabled_at: timestamp.nullable(),
  disabled_at: timestamp.nullable(),
  balance: decimal,
  transaction: z.object({
    id: id,
    type: z.enum(["deposit", "withdrawal"]),
    status: z.enum(["success", "failed"]),
    amount: decimal,
    reference_id: z.string().min(1),
    transacted_at: timestamp,
  }).nullable(),
  occurred_at: timestamp,
});

export type WalletEvent = z.infer<typeof walletEventSchema>;
