//! Which promotion an object belongs to when several open promotions named the same revision:
//! the same digest or commit promoted to `staging` and `prod` of one app in one cluster.
//!
//! The rule (the README's correlation contract states it for users), in order:
//! 1. With one candidate there is nothing to decide. Otherwise an object that contradicts a
//!    report is not that promotion's: an OCIRepository following
//!    another tag (`spec.ref.tag`, or the tag in its revision) than the report's artifact tag,
//!    or another repository than the report's.
//! 2. A reconciler whose `sourceRef` is a source that joined some of the promotions belongs to
//!    those.
//! 3. The object's own words, its name, namespace, Kustomization `spec.path` segments and
//!    `spec.targetNamespace`, split at `/`, `-`, `_` and `.`: promotions whose environment is
//!    among them win over those whose environment is not.
//! 4. What is left all join a source (one Git source feeds every environment's reconciler);
//!    a reconciler joins the newest of them.
//!
//! Pure: reads promotions, decides nothing else.

use super::super::promotion::Promotion;
use super::super::registry::Registry;
use crate::model::ObjectRef;

/// What an object says about which environment it delivers.
#[derive(Default)]
pub(in crate::correlate) struct Evidence<'a> {
    /// The tag an OCI source follows.
    pub tag: Option<&'a str>,
    /// The OCI repository a source pulls from (without `oci://`).
    pub repository: Option<&'a str>,
    /// A reconciler's source.
    pub source: Option<&'a ObjectRef>,
    /// Name, namespace, path, target namespace.
    pub words: Vec<&'a str>,
}

impl Evidence<'_> {
    fn names(&self, env: &str) -> bool {
        let env = env.to_ascii_lowercase();
        self.words.iter().any(|w| {
            w.split('/').any(|seg| {
                let seg = seg.to_ascii_lowercase();
                seg == env || seg.split(['-', '_', '.']).any(|part| part == env)
            })
        })
    }
}

fn contradicts(p: &Promotion, ev: &Evidence) -> bool {
    let tag = matches!((p.artifact_tag(), ev.tag), (Some(a), Some(b)) if a != b);
    let repo = matches!(
        (p.artifact_repository(), ev.repository),
        (Some(a), Some(b)) if a.trim_end_matches('/') != b.trim_end_matches('/')
    );
    tag || repo
}

/// The candidates (oldest first) the object belongs to, by the rule above; possibly none.
pub(in crate::correlate) fn choose<'a>(
    reg: &Registry,
    candidates: Vec<String>,
    evidence: impl FnOnce() -> Evidence<'a>,
) -> Vec<String> {
    if candidates.len() <= 1 {
        // One promotion of this revision: nothing to tell apart (a report may name the tag
        // CI pushed while the source follows a floating one).
        return candidates;
    }
    let ev = &evidence();
    let consistent: Vec<String> = candidates
        .iter()
        .filter(|id| reg.get(id).is_some_and(|p| !contradicts(p, ev)))
        .cloned()
        .collect();
    let mut left = if consistent.is_empty() {
        candidates
    } else {
        consistent
    };
    if let Some(src) = ev.source {
        let fed: Vec<String> = left
            .iter()
            .filter(|id| {
                reg.get(id)
                    .is_some_and(|p| p.sources.iter().any(|s| s.object.as_ref() == Some(src)))
            })
            .cloned()
            .collect();
        if !fed.is_empty() {
            left = fed;
        }
    }
    let named: Vec<String> = left
        .iter()
        .filter(|id| {
            reg.get(id)
                .and_then(Promotion::environment)
                .is_some_and(|env| ev.names(env))
        })
        .cloned()
        .collect();
    if !named.is_empty() {
        left = named;
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_words_come_from_path_segments_and_name_parts() {
        let ev = Evidence {
            words: vec!["podinfo-prod", "flux-system", "./apps/staging"],
            ..Default::default()
        };
        assert!(ev.names("prod"));
        assert!(ev.names("staging"));
        assert!(ev.names("Staging"));
        assert!(!ev.names("dev"));
        assert!(!ev.names("pro"));
    }
}
