-- wrk script of the rr-proxy and rr-sticky-ip rows: every connection
-- starts with a PROXY protocol v1 header, as a load balancer in front of
-- the supervisor would send it, naming one of 512 client addresses in turn
-- (10.1.0.1 ...), so that -sticky ip sees many clients, as it does in use,
-- instead of wrk's one 127.0.0.1.
--
--   wrk ... -s bench/proxy.lua URL -- close|keepalive CONNS_PER_THREAD
--
-- wrk has no per-connection hook: request() is called whenever a
-- connection is to send its next request. With Connection: close every
-- request is a connection's first, so each gets a header. With keep-alive
-- a thread's first CONNS_PER_THREAD calls are the first requests of its
-- connections (each connection sends its first request one event-loop turn
-- after it connects, and no response can be read before a request is
-- written), and later calls get none. A reconnect would break that: its
-- first request would lack the header and be refused (reset), and an
-- earlier connection's request would carry one; the harness fails the run
-- if the supervisor refused any header or wrk saw any error.
--
-- wrk also calls the first thread's request() once before it runs, to count
-- the requests a string holds; that call gets the plain request.
local plain, headed = nil, {}
local i, left, verify = 0, nil, false

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  local id, conns = wrk.thread:get("id"), tonumber(args[2])
  plain = wrk.format()
  for n = 1, 512 do
    headed[n] = string.format("PROXY TCP4 10.1.%d.%d 127.0.0.1 %d %s\r\n",
      math.floor(n / 256), n % 256, 30000 + n, wrk.port) .. plain
  end
  i = (id - 1) * conns % 512 -- threads start at different clients
  if args[1] ~= "close" then left = conns end
  verify = id == 1
end

function request()
  if verify then
    verify = false
    return plain
  end
  if left then
    if left == 0 then return plain end
    left = left - 1
  end
  i = i % 512 + 1
  return headed[i]
end
