/**
 * One example answer per operation for /openapi.json (Swagger UI shows them; generated clients' docs too),
 * with the contract's shapes and values that fit each other: one customer, one wallet, one deposit.
 */
const WALLET_ID = "c4d7d61f-b702-44a8-af97-5dbdafa96551";
const CUSTOMER_XID = "ea0212d3-abd6-406f-8c67-868e814a2436";
const ENABLED_AT = "2026-11-24T04:36:14.123Z";
const DEPOSIT = {
  id: "9b2a4f36-3c0e-4b8a-9d4e-1f7a2c6e8b10",
  reference_id: "50535246-dcb2-4929-8cc9-004ea06f5241",
  at: "2026-11-24T04:37:02.481Z",
  amount: 100000,
};
const WITHDRAWAL = {
  id: "e3f1c2d4-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
  reference_id: "4b0f6a1e-2d3c-4e5f-8a9b-7c6d5e4f3a2b",
  at: "2026-11-24T04:38:45.007Z",
  amount: 25000.5,
};

const enabledWallet = {
  id: WALLET_ID,
  owned_by: CUSTOMER_XID,
  status: "enabled" as const,
  enabled_at: ENABLED_AT,
  balance: 74999.5,
};

export const initExample = {
  status: "success" as const,
  data: { token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ3aWQiOiJjNGQ3ZDYxZi4uLiJ9.c2lnbmF0dXJl" },
};

export const enableExample = {
  status: "success" as const,
  data: { wallet: { ...enabledWallet, balance: 0 } },
};

export const viewExample = { status: "success" as const, data: { wallet: enabledWallet } };

export const transactionsExample = {
  status: "success" as const,
  data: {
    transactions: [
      {
        id: DEPOSIT.id,
        status: "success" as const,
        transacted_at: DEPOSIT.at,
        type: "deposit" as const,
        amount: DEPOSIT.amount,
        reference_id: DEPOSIT.reference_id,
      },
      {
        id: WITHDRAWAL.id,
        status: "success" as const,
        transacted_at: WITHDRAWAL.at,
        type: "withdrawal" as const,
        amount: WITHDRAWAL.amount,
        reference_id: WITHDRAWAL.reference_id,
      },
    ],
  },
};

export const depositExample = {
  status: "success" as const,
  data: {
    deposit: {
      id: DEPOSIT.id,
      deposited_by: CUSTOMER_XID,
      status: "success" as const,
      deposited_at: DEPOSIT.at,
      amount: DEPOSIT.amount,
      reference_id: DEPOSIT.reference_id,
    },
  },
};

export const withdrawalExample = {
  status: "success" as const,
  data: {
    withdrawal: {
      id: WITHDRAWAL.id,
      withdrawn_by: CUSTOMER_XID,
      status: "success" as const,
      withdrawn_at: WITHDRAWAL.at,
      amount: WITHDRAWAL.amount,
      reference_id: WITHDRAWAL.reference_id,
    },
  },
};

export const disableExample = {
  status: "success" as const,
  data: {
    wallet: {
      id: WALLET_ID,
      owned_by: CUSTOMER_XID,
      status: "disabled" as const,
      disabled_at: "2026-11-24T04:40:11.950Z",
      balance: 74999.5,
    },
  },
};
