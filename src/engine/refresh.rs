//! Remote key sets kept fresh on every worker: what a VM's root context does on its tick and
//! when a JWKS call answers, as events of the engine. The host only dispatches the [`Call`]s it
//! is given and hands back their answers; which provider is due, what is asked, how an answer is
//! judged and what is counted and logged are decided here.

use super::exchange::{Body, Io, Level, Vm};
use super::Engine;
use crate::abuse::revoke::RevocationList;
use crate::codes::Counter;
use crate::jwt::remote::{self, FetchFailure, RemoteSpec};
use std::collections::HashMap;

/// An outgoing HTTP call through an Envoy cluster. The answer comes back to whoever asked for it
/// as the call's status and body (the exchange's later pauses for remote services use the same
/// description).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub cluster: String,
    /// Pseudo-headers first.
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// The answer to a [`Call`], as the host saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallReply<'a> {
    /// The id the host gave the call when it dispatched it.
    pub id: u32,
    /// `:status`; `None`: no answer (reset, timeout).
    pub status: Option<&'a str>,
    /// Bytes of the answer's body, read through [`Io::body`] only when it is to be judged.
    pub body_size: usize,
}

pub use super::decision::KeySource as Source;

/// The key-set calls of one VM: whose keys each in-flight call is for.
#[derive(Debug, Default)]
pub struct KeyRefresh {
    /// Host call id -> whose keys.
    in_flight: HashMap<u32, Source>,
}

/// For the log and the counters: what is fetched, and for whom.
struct Named {
    kind: &'static str,
    whose: String,
    /// What the installed document holds, counted in the log line.
    items: &'static str,
    ok: Counter,
    failed: Counter,
}

const KEYS: (Counter, Counter) = (Counter::JwksFetchOk, Counter::JwksFetchFailed);

/// The fetch settings of `source`, and its names.
fn spec_of(engine: &Engine, source: Source) -> Option<(&RemoteSpec, Named)> {
    let named = |kind, whose, items, (ok, failed): (Counter, Counter)| Named {
        kind,
        whose,
        items,
        ok,
        failed,
    };
    match source {
        Source::Provider(index) => {
            engine
                .remote_providers()
                .find(|(i, _, _)| *i == index)
                .map(|(_, p, spec)| {
                    let whose = format!("provider `{}`", p.name);
                    (spec, named("jwks", whose, "usable keys", KEYS))
                })
        }
        Source::Signer(index) => {
            engine
                .remote_signers()
                .find(|(i, _, _)| *i == index)
                .map(|(_, s, spec)| {
                    let whose = format!("signer `{}`", s.name);
                    (spec, named("key set", whose, "usable keys", KEYS))
                })
        }
        Source::Revocations => engine.remote_spec(source).map(|spec| {
            let counters = (Counter::RevocationsFetchOk, Counter::RevocationsFetchFailed);
            let whose = "`revocations`".to_string();
            (spec, named("revocation list", whose, "entries", counters))
        }),
    }
}

fn jwks_call(spec: &RemoteSpec) -> Call {
    let header = |k: &str, v: &str| (k.to_string(), v.to_string());
    Call {
        cluster: spec.cluster.clone(),
        headers: vec![
            header(":method", "GET"),
            header(":path", &spec.path),
            header(":authority", &spec.authority),
            header(":scheme", &spec.scheme),
            header("accept", "application/json"),
        ],
        timeout_ms: spec.timeout_ms,
    }
}

impl KeyRefresh {
    /// Event: the tick (`now` in seconds). Key sets another worker fetched are installed; the
    /// calls this VM should make now are returned with their provider index.
    pub fn on_tick(
        &mut self,
        engine: &Engine,
        now: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) -> Vec<(Source, Call)> {
        let Vm { state, store } = vm;
        let mut calls = Vec::new();
        let due = |source: Source, spec: &RemoteSpec, calls: &mut Vec<(Source, Call)>| {
            if self.in_flight.values().any(|s| *s == source) {
                return;
            }
            // Only one worker of the process wins the claim for a due fetch.
            if matches!(remote::claim_fetch(store, spec, now), Ok(true)) {
                calls.push((source, jwks_call(spec)));
            }
        };
        for (index, provider, spec) in engine.remote_providers() {
            let Some(slot) = state.remote.get_mut(index) else {
                continue;
            };
            if let Ok(true) = remote::sync(store, spec, &provider.algorithms, slot) {
                io.count(super::exchange::Metric::Add(Counter::JwksInstalled, 1));
            }
            due(Source::Provider(index), spec, &mut calls);
        }
        if let Some(spec) = engine.remote_spec(Source::Revocations) {
            let parse = RevocationList::parse;
            if let Ok(true) = remote::sync_with(store, spec, &parse, &mut state.revocations) {
                io.count(super::exchange::Metric::Add(
                    Counter::RevocationsInstalled,
                    1,
                ));
            }
            due(Source::Revocations, spec, &mut calls);
        }
        for (index, signer, spec) in engine.remote_signers() {
            let Some(slot) = state.signer_keys.get_mut(index) else {
                continue;
            };
            let parse = |body: &[u8]| signer.parse_keys(body);
            if let Ok(true) = remote::sync_with(store, spec, &parse, slot) {
                io.count(super::exchange::Metric::Add(Counter::JwksInstalled, 1));
            }
            due(Source::Signer(index), spec, &mut calls);
        }
        calls
    }

    /// The host dispatched the call for `source`; its answer will carry `id`.
    pub fn dispatched(&mut self, id: u32, source: Source) {
        self.in_flight.insert(id, source);
    }

    /// Event: the host could not dispatch the call for `provider` (`why`: its own reason).
    pub fn on_dispatch_failed(
        &mut self,
        engine: &Engine,
        source: Source,
        why: &str,
        now: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) {
        if let Some((spec, Named { kind, whose, .. })) = spec_of(engine, source) {
            io.log(
                Level::Warn,
                &format!(
                    "tollgate: {kind} fetch for {whose} could not be dispatched to cluster `{}` ({why})",
                    spec.cluster
                ),
            );
        }
        finish(engine, source, now, Err(FetchFailure::Unreachable), vm, io);
    }

    /// Event: a call answered (or failed to).
    pub fn on_reply(
        &mut self,
        engine: &Engine,
        reply: CallReply<'_>,
        now: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) {
        let CallReply {
            id,
            status,
            body_size,
        } = reply;
        let Some(source) = self.in_flight.remove(&id) else {
            return;
        };
        let max = spec_of(engine, source).map_or(0, |(spec, _)| spec.max_bytes);
        let body;
        let outcome = match status.map(str::parse::<u32>) {
            None | Some(Err(_)) => Err(FetchFailure::Unreachable),
            Some(Ok(200)) if body_size > max => Err(FetchFailure::TooLarge),
            Some(Ok(200)) => {
                body = io.body(Body::CallResponse, body_size).unwrap_or_default();
                Ok(body.as_slice())
            }
            Some(Ok(code)) => Err(FetchFailure::Status(code)),
        };
        finish(engine, source, now, outcome, vm, io);
    }
}

/// Installs a fetched key set (or keeps the last good one), counted and logged.
fn finish(
    engine: &Engine,
    source: Source,
    now: u64,
    outcome: Result<&[u8], FetchFailure>,
    vm: Vm<'_>,
    io: &mut dyn Io,
) {
    let Vm { state, store } = vm;
    let Some((
        spec,
        Named {
            kind,
            whose,
            items,
            ok,
            failed,
        },
    )) = spec_of(engine, source)
    else {
        return;
    };
    // (generation, usable keys) once installed.
    let result = match source {
        Source::Provider(index) => {
            let (Some(slot), Some(provider)) =
                (state.remote.get_mut(index), engine.providers.get(index))
            else {
                return;
            };
            remote::complete_fetch(store, spec, &provider.algorithms, now, outcome, slot).map(|r| {
                r.map(|()| {
                    slot.as_ref()
                        .map_or((0, 0), |i| (i.generation, i.keys.len()))
                })
            })
        }
        Source::Signer(index) => {
            let (Some(slot), Some(signer)) =
                (state.signer_keys.get_mut(index), engine.signers.get(index))
            else {
                return;
            };
            let parse = |body: &[u8]| signer.parse_keys(body);
            remote::complete_fetch_with(store, spec, &parse, now, outcome, slot).map(|r| {
                r.map(|()| {
                    slot.as_ref()
                        .map_or((0, 0), |i| (i.generation, i.keys.len()))
                })
            })
        }
        Source::Revocations => {
            let slot = &mut state.revocations;
            let parse = RevocationList::parse;
            remote::complete_fetch_with(store, spec, &parse, now, outcome, slot).map(|r| {
                r.map(|()| {
                    slot.as_ref()
                        .map_or((0, 0), |i| (i.generation, i.keys.len()))
                })
            })
        }
    };
    let kept = match source {
        Source::Revocations => "list",
        Source::Provider(_) | Source::Signer(_) => "key set",
    };
    match result {
        Ok(Ok((generation, keys))) => {
            io.count(super::exchange::Metric::Add(ok, 1));
            io.log(
                Level::Info,
                &format!(
                    "tollgate: {kind} for {whose} fetched: {keys} {items}, generation {generation}"
                ),
            );
        }
        Ok(Err(failure)) => {
            io.count(super::exchange::Metric::Add(failed, 1));
            io.log(
                Level::Warn,
                &format!("tollgate: {kind} fetch for {whose} failed: {failure}; keeping the last good {kept}"),
            );
        }
        Err(e) => io.log(
            Level::Warn,
            &format!("tollgate: shared data unavailable for {whose}: {e:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::exchange::{Edit, HostError, Metric};
    use crate::store::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const POLICY: &str = r#"{"providers": {"idp": {"issuer": "i", "audiences": ["a"],
        "algorithms": ["ES256"], "remote_jwks": {"cluster": "keys", "uri": "https://idp.example/jwks"}}},
        "routes": [{"path": "/x", "providers": ["idp"]}]}"#;

    #[derive(Default)]
    struct Root {
        answer: Vec<u8>,
        counts: Vec<Counter>,
        logs: Vec<(Level, String)>,
    }

    impl Io for Root {
        fn request_header(&mut self, _: Edit<'_>) -> Result<(), HostError> {
            Err(HostError)
        }
        fn response_header(&mut self, _: Edit<'_>) {}
        fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>> {
            (which == Body::CallResponse)
                .then(|| self.answer.get(..size).map(<[u8]>::to_vec))
                .flatten()
        }
        fn count(&mut self, metric: Metric<'_>) {
            if let Metric::Add(c, _) = metric {
                self.counts.push(c);
            }
        }
        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_string()));
        }
        fn peer(&mut self) -> Option<String> {
            None
        }
    }

    fn vm<'a>(state: &'a mut crate::engine::VmState, store: &'a MemoryStore) -> Vm<'a> {
        Vm { state, store }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_due_fetch_is_one_call_and_its_answer_installs_the_keys() {
        let engine = Engine::compile(POLICY.as_bytes()).unwrap();
        let mut state = engine.new_state();
        let store = MemoryStore::default();
        let mut refresh = KeyRefresh::default();
        let mut io = Root::default();
        let calls = refresh.on_tick(&engine, 100, vm(&mut state, &store), &mut io);
        assert_eq!(calls.len(), 1);
        let (provider, call) = &calls[0];
        assert_eq!(call.cluster, "keys");
        assert!(call
            .headers
            .contains(&(":path".to_string(), "/jwks".to_string())));
        refresh.dispatched(7, *provider);
        // In flight: not asked again.
        assert!(refresh
            .on_tick(&engine, 101, vm(&mut state, &store), &mut io)
            .is_empty());
        io.answer =
            format!(r#"{{"keys": [{}]}}"#, crate::testkit::public_jwk("ec256")).into_bytes();
        let reply = CallReply {
            id: 7,
            status: Some("200"),
            body_size: io.answer.len(),
        };
        refresh.on_reply(&engine, reply, 101, vm(&mut state, &store), &mut io);
        assert_eq!(io.counts, [Counter::JwksFetchOk]);
        assert!(state.remote[0].as_ref().is_some_and(|k| k.keys.len() == 1));
        // An answer nobody waits for changes nothing.
        refresh.on_reply(&engine, reply, 102, vm(&mut state, &store), &mut io);
        assert_eq!(io.counts, [Counter::JwksFetchOk]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn failures_keep_the_last_good_keys_and_say_why() {
        let engine = Engine::compile(POLICY.as_bytes()).unwrap();
        let mut state = engine.new_state();
        let store = MemoryStore::default();
        let mut refresh = KeyRefresh::default();
        let mut io = Root::default();
        let calls = refresh.on_tick(
            &engine,
            100,
            Vm {
                state: &mut state,
                store: &store,
            },
            &mut io,
        );
        refresh.dispatched(1, calls[0].0);
        let reply = CallReply {
            id: 1,
            status: Some("503"),
            body_size: 0,
        };
        let vm = Vm {
            state: &mut state,
            store: &store,
        };
        refresh.on_reply(&engine, reply, 100, vm, &mut io);
        assert_eq!(io.counts, [Counter::JwksFetchFailed]);
        assert!(state.remote[0].is_none());
        let vm = Vm {
            state: &mut state,
            store: &store,
        };
        refresh.on_dispatch_failed(
            &engine,
            Source::Provider(0),
            "BadArgument",
            200,
            vm,
            &mut io,
        );
        assert_eq!(
            io.counts,
            [Counter::JwksFetchFailed, Counter::JwksFetchFailed]
        );
        assert!(io
            .logs
            .iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("cluster `keys` (BadArgument)")));
    }
}
