-- wrk: POST /api/v1/wallet/deposits (form-urlencoded, like a form client), rotating over the tokens in
-- $BENCH_TOKENS; every request has a unique reference_id: run id, thread id and a per-thread counter.
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local tokens, index, counter, prefix

setup = common.setup
done = common.done

function init(args)
  tokens = common.load_tokens()
  index = (thread_id * 7919) % #tokens
  counter = 0
  prefix = (os.getenv("BENCH_RUN_ID") or "run") .. "-" .. (os.getenv("BENCH_PHASE") or "p") .. "-t" .. thread_id .. "-"
end

function request()
  index = index % #tokens + 1
  counter = counter + 1
  local body = "amount=1&reference_id=" .. prefix .. counter
  return wrk.format("POST", "/api/v1/wallet/deposits", {
    ["Authorization"] = "Token " .. tokens[index],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end
