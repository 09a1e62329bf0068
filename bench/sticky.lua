-- wrk script of the rr-sticky-cookie row: each request carries one of 512
-- session cookies, in turn, so that new connections (the close load) spread
-- over every slot by key. The requests are formatted once, in init: a
-- request costs wrk a table index, not a format.
local reqs, i = {}, 0

function init(args)
  for n = 1, 512 do
    local h = {}
    for k, v in pairs(wrk.headers) do h[k] = v end
    h["Cookie"] = "theme=dark; sid=user" .. n
    reqs[n] = wrk.format(nil, nil, h)
  end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end
