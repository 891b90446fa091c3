-- wrk -s bench/wrk/lifecycle.lua: whole CooCenter calls, four pushes each in order (dialbegin,
-- dialend, hangup, cdr); two calls in three answered, the third rings out and is missed.
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

local pushes = {
  '{"event":"dialbegin","timestamp":"1725845648.5","channel":"SIP/trunk1-1",' ..
  '"calleridnum":"13800138000","destchannel":"SIP/801-1","destcalleridnum":"801",' ..
  '"destuniqueid":"%s2","uniqueid":"%s"}',
  '{"event":"dialend","timestamp":"1725845649.5","channel":"SIP/trunk1-1",' ..
  '"calleridnum":"13800138000","destchannel":"SIP/801-1","destcalleridnum":"801",' ..
  '"uniqueid":"%s","dialstatus":"%s"}',
  '{"event":"hangup","uniqueid":"%s","calleridnum":"13800138000","connectedlinenum":"801"}',
  '{"event":"cdr","uniqueid":"%s","source":"13800138000","destination":"801",' ..
  '"starttime":"2024-09-09 09:34:08","answertime":"","endtime":"2024-09-09 09:35:20",' ..
  '"disposition":"%s","duration":"72","billableseconds":"60","calltype":"inbound"}',
}

function request()
  local step = counter % 4
  local call = math.floor(counter / 4)
  counter = counter + 1
  local uid = string.format("%d%09d.1", tid or 0, call)
  local answered = call % 3 ~= 0
  local body
  if step == 0 then
    body = string.format(pushes[1], uid, uid)
  elseif step == 1 then
    body = string.format(pushes[2], uid, answered and "ANSWER" or "NOANSWER")
  elseif step == 2 then
    body = string.format(pushes[3], uid)
  else
    body = string.format(pushes[4], uid, answered and "ANSWERED" or "NO ANSWER")
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
