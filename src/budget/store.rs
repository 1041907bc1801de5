//! Where limit counters live: Redis (or Valkey), shared by every replica, or this process when
//! no `shared_state.redis` is given. Both run the same two operations: `reserve` checks every
//! counter of a request and adds to all of them, or to none, atomically (a Lua script in Redis);
//! `adjust` settles a reservation to what the request really used. Counters are integers
//! (picodollars, tokens, requests) in keys that expire with their window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::lease::Leases;
use std::sync::atomic::{AtomicBool, Ordering};

/// One counter a request adds to.
#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    pub add: i64,
    /// The cap of the counter.
    pub max: i64,
    /// true: admitted only if the counter stays within the cap with this request (rates);
    /// false: admitted while the counter is below the cap (budgets: the last request may cross).
    pub strict: bool,
    /// Unix seconds at which the key can go (its window's end, plus slack).
    pub expire_at: u64,
}

/// What a reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Admitted: the counters' new values, in the order of the ops.
    Yes(Vec<i64>),
    /// Refused by the op at this index, whose counter stood at `used`.
    No { index: usize, used: i64 },
}

/// Why the store did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

const RESERVE: &str = r"
local n = #KEYS
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local add = tonumber(ARGV[(i-1)*4+1])
  local max = tonumber(ARGV[(i-1)*4+2])
  local strict = ARGV[(i-1)*4+3] == '1'
  if (strict and used + add > max) or ((not strict) and used >= max) then
    return {-1, i - 1, used}
  end
end
local out = {0}
for i = 1, n do
  out[#out + 1] = redis.call('INCRBY', KEYS[i], ARGV[(i-1)*4+1])
  redis.call('EXPIREAT', KEYS[i], ARGV[(i-1)*4+4])
end
return out
";

const ADJUST: &str = r"
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = redis.call('INCRBY', KEYS[i], ARGV[i])
  else
    out[i] = 0
  end
end
return out
";

pub enum Store {
    /// This process: counters and their expiry (unix seconds).
    Memory(Mutex<HashMap<String, (i64, u64)>>),
    Redis {
        conn: ConnectionManager,
        reserve: redis::Script,
        adjust: redis::Script,
        /// This replica's slices of the counters ([`super::lease`]).
        leases: Leases,
        /// Whether the task that gives idle slices back runs.
        flusher: AtomicBool,
        /// One slice request to Redis at a time per replica: concurrent requests that find their
        /// slice short wait for it instead of each taking one.
        grant: tokio::sync::Mutex<()>,
    },
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    pub fn memory() -> Store {
        Store::Memory(Mutex::new(HashMap::new()))
    }

    /// A store on Redis at `url`; connects on first use and reconnects after failures.
    pub fn redis(url: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Store::Redis {
            conn,
            reserve: redis::Script::new(RESERVE),
            adjust: redis::Script::new(ADJUST),
            leases: Leases::default(),
            flusher: AtomicBool::new(false),
            grant: tokio::sync::Mutex::new(()),
        })
    }

    /// The leases of a Redis store (a store in memory needs none), and the lock that lets one
    /// request at a time ask Redis for slices.
    pub fn leases(&self) -> Option<(&Leases, &tokio::sync::Mutex<()>)> {
        match self {
            Store::Memory(_) => None,
            Store::Redis { leases, grant, .. } => Some((leases, grant)),
        }
    }

    /// True the first time it is asked (the caller starts the task that returns idle slices).
    pub fn claim_flusher(&self) -> bool {
        match self {
            Store::Memory(_) => false,
            Store::Redis { flusher, .. } => !flusher.swap(true, Ordering::Relaxed),
        }
    }

    pub async fn reserve(&self, ops: &[Op]) -> Result<Reserved, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|e| e.into_inner());
                let t = now();
                map.retain(|_, (_, exp)| *exp > t);
                for (i, op) in ops.iter().enumerate() {
                    let used = map.get(&op.key).map_or(0, |v| v.0);
                    if (op.strict && used.saturating_add(op.add) > op.max)
                        || (!op.strict && used >= op.max)
                    {
                        return Ok(Reserved::No { index: i, used });
                    }
                }
                Ok(Reserved::Yes(
                    ops.iter()
                        .map(|op| {
                            let v = map.entry(op.key.clone()).or_insert((0, op.expire_at));
                            v.0 = v.0.saturating_add(op.add);
                            v.1 = op.expire_at;
                            v.0
                        })
                        .collect(),
                ))
            }
            Store::Redis { conn, reserve, .. } => {
                let mut inv = reserve.prepare_invoke();
                for op in ops {
                    inv.key(&op.key);
                    inv.arg(op.add)
                        .arg(op.max)
                        .arg(u8::from(op.strict))
                        .arg(op.expire_at);
                }
                let v: Vec<i64> = inv
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                match v.as_slice() {
                    [0, rest @ ..] if rest.len() == ops.len() => Ok(Reserved::Yes(rest.to_vec())),
                    [-1, i, used] => Ok(Reserved::No {
                        index: usize::try_from(*i)
                            .unwrap_or(0)
                            .min(ops.len().saturating_sub(1)),
                        used: *used,
                    }),
                    other => Err(StoreError(format!("unexpected reply {other:?}"))),
                }
            }
        }
    }

    /// Adds `delta` to each key that still exists; returns the new values (0 for a gone key).
    pub async fn adjust(&self, ops: &[(String, i64)]) -> Result<Vec<i64>, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|e| e.into_inner());
                Ok(ops
                    .iter()
                    .map(|(k, d)| match map.get_mut(k) {
                        Some(v) => {
                            v.0 = v.0.saturating_add(*d);
                            v.0
                        }
                        None => 0,
                    })
                    .collect())
            }
            Store::Redis { conn, adjust, .. } => {
                let mut inv = adjust.prepare_invoke();
                for (k, d) in ops {
                    inv.key(k).arg(*d);
                }
                inv.invoke_async(&mut conn.clone())
                    .await
                    .map_err(|e| StoreError(e.to_string()))
            }
        }
    }

    /// True the first time `key` is seen (kept `ttl`); false after that.
    pub async fn once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|e| e.into_inner());
                let exp = now() + ttl.as_secs();
                Ok(map.insert(key.to_owned(), (1, exp)).is_none())
            }
            Store::Redis { conn, .. } => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                Ok(set.is_some())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, add: i64, max: i64, strict: bool) -> Op {
        Op {
            key: key.into(),
            add,
            max,
            strict,
            expire_at: now() + 60,
        }
    }

    #[tokio::test]
    async fn a_reservation_adds_to_every_counter_or_to_none() {
        let s = Store::memory();
        assert_eq!(
            s.reserve(&[op("usd", 5, 10, false), op("tok", 6, 10, true)])
                .await
                .unwrap(),
            Reserved::Yes(vec![5, 6])
        );
        // the token rate would pass 10: refused, and the budget untouched
        assert_eq!(
            s.reserve(&[op("usd", 5, 10, false), op("tok", 6, 10, true)])
                .await
                .unwrap(),
            Reserved::No { index: 1, used: 6 }
        );
        // a budget admits while below its cap, so the last request may cross it
        assert_eq!(
            s.reserve(&[op("usd", 7, 10, false)]).await.unwrap(),
            Reserved::Yes(vec![12])
        );
        assert_eq!(
            s.reserve(&[op("usd", 1, 10, false)]).await.unwrap(),
            Reserved::No { index: 0, used: 12 }
        );
        // settling gives back what was not used
        assert_eq!(
            s.adjust(&[("usd".into(), -4), ("gone".into(), 3)])
                .await
                .unwrap(),
            vec![8, 0]
        );
        assert!(s.once("fb:1", Duration::from_secs(60)).await.unwrap());
        assert!(!s.once("fb:1", Duration::from_secs(60)).await.unwrap());
    }
}
