-- wrk -s bench/wrk/dialbegin.lua: a CooCenter dialbegin per request, each a new call (its
-- uniqueid from the connection and a counter), so every push is committed and goes through the
-- call fold (call.initiated + call.ringing).
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local uid = string.format("%d%09d.1", tid or 0, counter)
  local body = string.format(
    '{"event":"dialbegin","timestamp":"1725845648.5","channel":"SIP/trunk1-%d",' ..
    '"calleridnum":"13800138000","destchannel":"SIP/801-%d","destcalleridnum":"801",' ..
    '"destuniqueid":"%s2","uniqueid":"%s"}', counter, counter, uid, uid)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
