-- wrk: GET /api/v1/wallet, rotating over the tokens in $BENCH_TOKENS (one per line).
package.path = os.getenv("BENCH_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local tokens, index, requests

setup = common.setup
done = common.done

function init(args)
  tokens = common.load_tokens()
  index = (thread_id * 7919) % #tokens
  requests = {}
  for i, token in ipairs(tokens) do
    requests[i] = wrk.format("GET", "/api/v1/wallet", { ["Authorization"] = "Token " .. token })
  end
end

function request()
  index = index % #tokens + 1
  return requests[index]
end
