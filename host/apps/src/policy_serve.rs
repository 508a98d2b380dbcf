//! `reachy policy serve`: a policy on one machine (a GPU box), reached over zenoh by the runners
//! of any number of robots. Observations come in as queries on `reachy_policy/<name>/infer`, each
//! answered with a timestamped action chunk. One worker runs inference in arrival order; when a
//! session (a robot) has several requests waiting, only its newest is computed and the older
//! ones are answered "superseded" and counted as dropped, so a slow server never feeds a robot
//! stale chunks. `reachy_policy/<name>/info` tells the policy's features and per-session latency,
//! queue depth and drops.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use zenoh::Wait;

use crate::policy_run::LocalPolicy;
use reachy_api::schema::{self, keys, POLICY_SCHEMA_VERSION as PV};
use reachy_api::worker::Worker;
use reachy_api::ApiError;

struct Pending {
    query: zenoh::query::Query,
    req: schema::PolicyRequest,
    arrived: Instant,
}

#[derive(Default)]
struct SessionCounters {
    served: u64,
    dropped: u64,
    errors: u64,
    /// inference + queue times (ms), the last 1000
    times: VecDeque<f64>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Pending>>,
    ready: Condvar,
    sessions: Mutex<BTreeMap<String, SessionCounters>>,
}

impl Shared {
    fn count(&self, session: &str, f: impl FnOnce(&mut SessionCounters)) {
        if let Ok(mut s) = self.sessions.lock() {
            f(s.entry(session.to_string()).or_default());
        }
    }

    fn stats(&self) -> Vec<schema::PolicySessionStats> {
        let Ok(s) = self.sessions.lock() else {
            return Vec::new();
        };
        s.iter()
            .map(|(name, c)| {
                let mut t: Vec<f64> = c.times.iter().copied().collect();
                t.sort_by(|a, b| a.total_cmp(b));
                let pick = |p: f64| {
                    if t.is_empty() {
                        0.0
                    } else {
                        t[((t.len() - 1) as f64 * p).round() as usize]
                    }
                };
                schema::PolicySessionStats {
                    session: name.clone(),
                    served: c.served,
                    dropped: c.dropped,
                    errors: c.errors,
                    p50_ms: pick(0.5),
                    p99_ms: pick(0.99),
                }
            })
            .collect()
    }
}

fn reply_error(q: &zenoh::query::Query, why: &str) {
    let msg = schema::ErrorReply {
        v: PV,
        error: why.to_string(),
    };
    if let Err(e) = q.reply_err(schema::encode(&msg)).wait() {
        tracing::warn!("policy server: replying an error: {e}");
    }
}

/// A running policy server; dropping it stops it.
pub struct PolicyServer {
    shared: Arc<Shared>,
    worker: Worker<std::convert::Infallible>,
    _queryables: Vec<zenoh::query::Queryable<()>>,
}

impl PolicyServer {
    /// Serve `policy` as `name` on `session`.
    pub fn spawn(
        session: &zenoh::Session,
        name: &str,
        policy: LocalPolicy,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let spec = policy.spec().clone();
        let infer = {
            let shared = shared.clone();
            session
                .declare_queryable(keys::policy_infer(name))
                .callback(move |q| {
                    let Some(bytes) = q.payload().map(|p| p.to_bytes().into_owned()) else {
                        reply_error(&q, "an inference query needs a PolicyRequest payload");
                        return;
                    };
                    match schema::decode_policy::<schema::PolicyRequest>(&bytes) {
                        Ok(req) => {
                            if let Ok(mut queue) = shared.queue.lock() {
                                queue.push_back(Pending {
                                    query: q,
                                    req,
                                    arrived: Instant::now(),
                                });
                                shared.ready.notify_one();
                            }
                        }
                        Err(e) => {
                            tracing::warn!("policy server: malformed request: {e}");
                            shared.count("(malformed)", |c| c.errors += 1);
                            reply_error(&q, &format!("malformed request: {e}"));
                        }
                    }
                })
                .wait()
                .map_err(ApiError::zenoh("declaring the inference queryable"))?
        };
        let info = {
            let shared = shared.clone();
            let name = name.to_string();
            let device = policy.device().to_string();
            session
                .declare_queryable(keys::policy_info(&name))
                .callback(move |q| {
                    let msg = schema::PolicyServerInfo {
                        v: PV,
                        name: name.clone(),
                        policy: "act".into(),
                        device: device.clone(),
                        state_dim: spec.state_dim,
                        action_dim: spec.action_dim,
                        images: spec.images.clone(),
                        chunk_size: spec.chunk_size,
                        n_action_steps: spec.n_action_steps,
                        queue_depth: shared.queue.lock().map(|q| q.len() as u32).unwrap_or(0),
                        sessions: shared.stats(),
                    };
                    if let Err(e) = q.reply(q.key_expr().clone(), schema::encode(&msg)).wait() {
                        tracing::warn!("policy server: info reply: {e}");
                    }
                })
                .wait()
                .map_err(ApiError::zenoh("declaring the info queryable"))?
        };
        let worker = {
            let shared = shared.clone();
            Worker::spawn("policy-server", move |stop| {
                work(&shared, stop, &policy);
                Ok(())
            })?
        };
        Ok(Self {
            shared,
            worker,
            _queryables: vec![infer, info],
        })
    }

    /// Per-session counters.
    pub fn stats(&self) -> Vec<schema::PolicySessionStats> {
        self.shared.stats()
    }

    /// Requests waiting.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        // wake the worker from its wait; dropping the worker then joins it
        self.worker.request_stop();
        self.shared.ready.notify_all();
    }
}

/// The worker: newest request of each session, in arrival order.
fn work(shared: &Shared, stop: &AtomicBool, policy: &LocalPolicy) {
    while !stop.load(Ordering::SeqCst) {
        let batch: Vec<Pending> = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.is_empty() && !stop.load(Ordering::SeqCst) {
                q = match shared.ready.wait_timeout(q, Duration::from_millis(100)) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            q.drain(..).collect()
        };
        // the newest request of each session wins
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for p in &batch {
            let e = newest.entry(p.req.session.clone()).or_insert(p.req.seq);
            *e = (*e).max(p.req.seq);
        }
        let keep: Vec<Pending> = batch
            .into_iter()
            .filter_map(|p| {
                if newest.get(&p.req.session) == Some(&p.req.seq) {
                    Some(p)
                } else {
                    shared.count(&p.req.session, |c| c.dropped += 1);
                    reply_error(
                        &p.query,
                        &format!("superseded by a newer observation of {}", p.req.session),
                    );
                    None
                }
            })
            .collect();
        let n = keep.len();
        for (i, p) in keep.into_iter().enumerate() {
            let taken = Instant::now();
            let queue_ms = taken.duration_since(p.arrived).as_secs_f64() * 1e3;
            match policy.infer(&p.req) {
                Ok(actions) => {
                    let infer_ms = taken.elapsed().as_secs_f64() * 1e3;
                    let chunk = schema::PolicyChunk {
                        v: PV,
                        session: p.req.session.clone(),
                        seq: p.req.seq,
                        t_obs: p.req.t_obs,
                        actions,
                        infer_ms,
                        queue_ms,
                        queue_depth: (n - i - 1) as u32,
                    };
                    match p
                        .query
                        .reply(p.query.key_expr().clone(), schema::encode(&chunk))
                        .wait()
                    {
                        Ok(()) => shared.count(&p.req.session, |c| {
                            c.served += 1;
                            c.times.push_back(infer_ms + queue_ms);
                            if c.times.len() > 1000 {
                                c.times.pop_front();
                            }
                        }),
                        Err(e) => tracing::warn!("policy server: reply: {e}"),
                    }
                }
                Err(e) => {
                    shared.count(&p.req.session, |c| c.errors += 1);
                    reply_error(&p.query, &format!("{e:#}"));
                }
            }
        }
    }
}
