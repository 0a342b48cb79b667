//! The Lua scripts, each on one key (one Cluster slot): what must happen in one step on an SA or
//! on an AOR's bindings.

use redis::Script;

/// Publishes an SA: KEYS[1] the SA, ARGV rec, owner, generation, identity, expiry (unix seconds),
/// the owner's replay window ('' when it has none to give) and idle deadline, which replace what
/// the record held.
/// 1 written; 0 revoked; 2 another node holds it at this or a later generation (a node back from
/// a partition must not take back an SA claimed meanwhile); 3 the opaque names another user's SA
/// or tombstone (two gateways drew the same opaque: the first SA keeps it, docs/security.md
/// B11e). Users compare as the user sets' keys do, ASCII case folded (Lua's `lower` under the C
/// locale Redis runs in).
const PUBLISH_SA: &str = r"
local u = redis.call('HGET', KEYS[1], 'user')
if u and string.lower(u) ~= string.lower(ARGV[4]) then return 3 end
if redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then return 0 end
local o = redis.call('HMGET', KEYS[1], 'owner', 'gen')
if o[2] and (tonumber(o[2]) > tonumber(ARGV[3]) or (tonumber(o[2]) == tonumber(ARGV[3]) and o[1] ~= ARGV[2])) then
  return 2
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'owner', ARGV[2], 'gen', ARGV[3], 'user', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'win', ARGV[6], 'idle', ARGV[7]) end
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1
";

/// Claims an SA for ARGV[1] and publishes ARGV[2] .. gen .. ARGV[3] (the `moved` event around the
/// new generation). Nil when the SA is unknown; -1 (nothing changed) when ARGV[5] is not empty
/// and the SA is no longer at that generation.
const CLAIM_SA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'rec') == 0 then return false end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'gen') ~= ARGV[5] then return -1 end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
local prev = redis.call('HGET', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'rec', 'win', 'idle')
redis.call('PUBLISH', ARGV[4], ARGV[2] .. gen .. ARGV[3])
return {f[1], gen, f[2], f[3], prev}
";

/// Writes the window and idle deadline if ARGV[1] still owns the SA at generation ARGV[2] and it
/// is ARGV[5]'s (ASCII case ignored, as user sets are keyed): a node's checkpoint of bob's SA,
/// sent before it heard that the publication under that opaque was refused (another user's
/// record, an idle one of its own node's among them), would otherwise write bob's window and
/// deadline into alice's record and make it claimable again. 1 written, 0 another owner,
/// generation or user, 2 the store does not have it (lost, e.g. a restart without persistence),
/// 3 revoked.
const CHECKPOINT: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'gen', 'user')
if o[1] == ARGV[1] and o[2] == ARGV[2] and (not o[3] or string.lower(o[3]) == string.lower(ARGV[5])) then
  redis.call('HSET', KEYS[1], 'win', ARGV[3], 'idle', ARGV[4])
  return 1
end
if redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then return 3 end
if not o[1] then return 2 end
return 0
";

/// Replaces an SA by a tombstone until its end (8 hours when its end is unknown), so that its
/// owner, told by a checkpoint or a publication, ends it even if it missed the event; publishes
/// ARGV[2] on ARGV[1]. ARGV[3]: the user whose SA is meant ('' for whoever's: an operator's
/// revocation by opaque). The tombstone keeps the user, so that another user's SA cannot be
/// published under the opaque while it stands. Returns {1, user} when the store had the SA;
/// {0, user} when it did not (tombstoned and published anyway: a node may still hold it);
/// {-1} when the opaque names another user's SA or tombstone: nothing changed, nothing
/// published (a collision of opaques must not let one user's revocation end another's SA).
const REVOKE_SA: &str = r"
local f = redis.call('HMGET', KEYS[1], 'user', 'rec')
local u = f[1]
if ARGV[3] ~= '' and u and string.lower(u) ~= string.lower(ARGV[3]) then return {-1} end
if not u and ARGV[3] ~= '' then u = ARGV[3] end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'revoked', 1)
if u then redis.call('HSET', KEYS[1], 'user', u) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('EXPIRE', KEYS[1], 28800) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
if f[2] then return {1, u} end
return {0, u}
";

/// Removes the binding of device ARGV[1] if node ARGV[2] holds it (its encoded value starts with a
/// version byte, the node's length and the node: `codec::encode_binding`); returns how many the
/// AOR has left.
const REMOVE_BINDING: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and #v >= 2 and string.sub(v, 3, 2 + string.byte(v, 2)) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('HLEN', KEYS[1])
";

/// KEYS[1] = `sagw:node:{node}`; ARGV = instance, hold in ms. Takes or extends the hold when it is
/// free or this instance's; returns the holder otherwise (nil when held now).
const HOLD_NODE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then
  return v
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// KEYS[1] = `sagw:node:{node}`; ARGV = instance. Deletes the hold when it is this instance's.
const RELEASE_NODE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub(super) struct Scripts {
    pub(super) publish_sa: Script,
    pub(super) claim: Script,
    pub(super) checkpoint: Script,
    pub(super) revoke: Script,
    pub(super) remove_binding: Script,
    pub(super) hold_node: Script,
    pub(super) release_node: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            publish_sa: Script::new(PUBLISH_SA),
            claim: Script::new(CLAIM_SA),
            checkpoint: Script::new(CHECKPOINT),
            revoke: Script::new(REVOKE_SA),
            remove_binding: Script::new(REMOVE_BINDING),
            hold_node: Script::new(HOLD_NODE),
            release_node: Script::new(RELEASE_NODE),
        }
    }
}
