//! The correlation engine: delivery events in, finished spans and triage stories out.
//!
//! Pure and synchronous. [`Engine::apply`] takes one [`DeliveryEvent`](crate::model::DeliveryEvent),
//! [`Engine::tick`] moves the clock; both return [`Output`]s. The engine never reads the clock,
//! never draws a random number and never does IO, so a recording always yields the same spans,
//! ids included, and every rule here is testable by feeding events. No input, however far in
//! the past or future, makes it panic: time arithmetic saturates.
//!
//! How a promotion is assembled (docs/design.md, "Correlation contract"):
//! - a promotion report, an OCI artifact annotation, a Flux object or Deployment annotation, or
//!   Flux event metadata names the promotion; a Flux image automation push opens one of its own;
//! - revisions join objects to it: a source whose artifact revision names the promotion's commit
//!   or digest, a Kustomization/HelmRelease attempting that revision, a Deployment whose
//!   reconcile changed it (Flux labels) or that carries the promotion id; when several open
//!   promotions share a revision, what the report and the objects say picks one;
//! - each stage ends on its own evidence (conditions, rollout status) or at its deadline, and
//!   the promotion reaches a verdict once nothing is open and a settle period has passed.
//!
//! Where is…
//!
//! | what | file |
//! |---|---|
//! | the public API, dispatch of each observation, `tick`/`finish` | `engine.rs` |
//! | deadlines and tolerances; saturating time arithmetic | `config.rs` |
//! | a promotion's data, its ids, `Traceability`; opening promotions, superseding | `promotion.rs` |
//! | revisions Flux delivered that nobody announced; a report taking one over | `unreported.rs` |
//! | what the initial state shows delivered: history, never judged | `history.rs` |
//! | open/finished promotions and their indexes (the only writer) | `registry.rs` |
//! | which sources and reconcilers are at which revision | `revisions.rs` |
//! | which of several promotions of one revision an object belongs to | `stage/matching.rs` |
//! | trigger spans (webhook → reconcile request handled); Receivers by what they trigger | `stage/trigger.rs` |
//! | Flux image automation: automated promotions, the `image.update` stage | `stage/image.rs` |
//! | source fetch joins and failures | `stage/source.rs` |
//! | reconcile and apply, changed objects, failure classification | `stage/reconcile.rs` |
//! | where a rollout is claimed; untraced rollouts | `stage/rollout.rs` |
//! | traffic probe requests and results | `stage/traffic.rs` |
//! | Flagger canary analyses (`traffic.canary`), their primaries' rollouts | `stage/canary.rs` |
//! | event de-duplication and buffering, Pod → ReplicaSet → Deployment | `events.rs` |
//! | the deadline queue | `timers.rs` |
//! | stage timeouts, where the verdict is decided, divergence and evidence | `verdict.rs` |
//! | span records and stories | `render.rs` |
//! | what runs on each Deployment, who delivered it (`Engine::workloads`) | `workloads.rs` |
//! | a stage span under construction | `span.rs` |

mod config;
mod engine;
mod events;
mod history;
mod packed;
mod promotion;
mod registry;
mod render;
mod revisions;
mod span;
mod stage;
mod timers;
mod unreported;
mod verdict;
mod workloads;

/// The engine's maps and sets: foldhash, seeded per process as the standard library's hasher
/// is (nothing reads an order from them), and several times faster on the short keys the engine
/// looks up for every observation.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`Map`].
type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The state an object keeps in `map`, made for an object not there yet: its key is copied only
/// then, where `entry` would copy it for every observation. Always `Some`.
fn state_of<'a, V: Default>(
    map: &'a mut Map<crate::model::ObjectRef, V>,
    key: &crate::model::ObjectRef,
) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        map.insert(key.clone(), V::default());
    }
    map.get_mut(key)
}

pub use config::{Deadlines, EngineConfig};
pub use engine::{Engine, EngineSize, Output};
pub use promotion::Traceability;
pub use span::{Failure, SpanKey, StageResult, StageSpan};
pub use workloads::LinkFn;

#[cfg(test)]
mod tests;
