package stream

import goredis "github.com/redis/go-redis/v9"

// The scripts of the protocol (protocol.go). Each runs atomically: a worker's renewal,
// the reaper and another worker never interleave with one.

// moveScript takes an entry out of the group's pending entries and adds its fields as a
// new entry of KEYS[2] (the stream again, or its :failed stream), with its attempts
// plus ARGV[5] and, if ARGV[6] is not empty, the error ARGV[6]; then acknowledges and
// deletes the old one. Only if the entry is pending, for the consumer ARGV[3] (any if
// empty), idle at least ARGV[4] ms. The XADD comes first: Redis does not undo a script's
// writes when a later command fails, so an XADD that fails (KEYS[2] is not a stream)
// must leave the entry pending as it was, never acknowledged and still in the stream,
// where no consumer would read it again. It returns the attempts of the new entry; -1 if the
// entry was not pending as asked (nothing changed), -2 if it was pending but deleted
// from the stream by someone else (it is acknowledged: there is nothing to move).
// If ARGV[7] is '1', the copy keeps the item field alone (and attempts, error): the
// reaper's way out for an entry whose fields cannot all be copied (thousands of them:
// Lua's unpack refuses them).
// KEYS: stream, destination. ARGV: group, id, consumer, min idle ms, attempts delta,
// error, item only.
var moveScript = goredis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return -1 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return -1 end
if tonumber(p[1][3]) < tonumber(ARGV[4]) then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -2
end
local f = e[1][2]
local out = {}
local attempts = 0
for i = 1, #f, 2 do
  if f[i] == 'attempts' then
    attempts = tonumber(f[i + 1]) or 0
  elseif f[i] ~= 'error' and (ARGV[7] ~= '1' or f[i] == 'item') then
    out[#out + 1] = f[i]
    out[#out + 1] = f[i + 1]
  end
end
attempts = attempts + tonumber(ARGV[5])
out[#out + 1] = 'attempts'
out[#out + 1] = tostring(attempts)
if ARGV[6] ~= '' then
  out[#out + 1] = 'error'
  out[#out + 1] = ARGV[6]
end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return attempts
`)

// renewScript resets the idle time of an entry pending for the consumer ARGV[3] (XCLAIM
// to itself, min idle 0, JUSTID: the delivery count stays); 0 if it is not pending for
// it (the lease was lost). KEYS: stream. ARGV: group, id, consumer.
var renewScript = goredis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
`)

// requeueScript moves up to ARGV[1] entries of the :failed stream, oldest first, to the
// end of the stream, without their attempts and error (a fresh count of attempts).
// KEYS: failed, stream.
var requeueScript = goredis.NewScript(`
local moved = 0
for i = 1, tonumber(ARGV[1]) do
  local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #e == 0 then break end
  local f = e[1][2]
  local out = {}
  for j = 1, #f, 2 do
    if f[j] ~= 'attempts' and f[j] ~= 'error' then
      out[#out + 1] = f[j]
      out[#out + 1] = f[j + 1]
    end
  end
  if #out == 0 then out = {'attempts', '0'} end
  redis.call('XADD', KEYS[2], '*', unpack(out))
  redis.call('XDEL', KEYS[1], e[1][1])
  moved = moved + 1
end
return moved
`)

// deleteConsumerScript deletes the consumer ARGV[2] of the group, only if no entry is
// pending for it (XGROUP DELCONSUMER drops a consumer's pending entries: never
// unchecked); 1 if deleted. KEYS: stream. ARGV: group, consumer.
var deleteConsumerScript = goredis.NewScript(`
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// requeueEntryScript moves the entry ARGV[1] of the :failed stream, if its item is still
// ARGV[2], to the end of the stream without its attempts and error (as requeueScript);
// 1 if moved, 0 if it is gone or holds another item. KEYS: failed, stream.
var requeueEntryScript = goredis.NewScript(`
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local out = {}
local item = nil
for j = 1, #f, 2 do
  if f[j] == 'item' then item = f[j + 1] end
  if f[j] ~= 'attempts' and f[j] ~= 'error' then
    out[#out + 1] = f[j]
    out[#out + 1] = f[j + 1]
  end
end
if item ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
`)

// dropEntryScript deletes the entry ARGV[1] of KEYS[1] if its item is still ARGV[2] and,
// when ARGV[3] names the group, no consumer of it holds the entry (a group that does not
// exist holds nothing: the producer's XADD comes before any worker creates it); 1 if
// deleted, 0 if it is gone or holds another item, -1 if it is in flight. KEYS: stream.
// ARGV: id, item, and the group or an empty string.
var dropEntryScript = goredis.NewScript(`
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local item = nil
for j = 1, #f, 2 do
  if f[j] == 'item' then item = f[j + 1] end
end
if item ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[3], ARGV[1], ARGV[1], 1)
  if type(p) == 'table' and p.err ~= nil then
    if not string.find(p.err, 'NOGROUP', 1, true) then return redis.error_reply(p.err) end
  elseif #p > 0 then return -1 end
end
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
`)
