//! Which Kustomizations, HelmReleases and HelmCharts follow a source, and which reconcilers a
//! Kustomization applies: the last observations indexed by their `sourceRef` and by the
//! Kustomization that applied them, so that a verdict and a claim look up the few that matter
//! instead of reading every reconciler and source of the cluster.
//!
//! Kept in step with `Engine::reconcilers` and `Engine::sources` by the reconcile and source
//! stages (each new last observation) and by deletions (`Engine::on_deleted`); read by
//! `verdict` (are all of a source's followers suspended? does only a HelmChart follow it?) and
//! by the reconcile stage (reconcilers an apply changed).

use super::super::Map;
use crate::model::{ObjectRef, ReconcilerObs, SourceObs};

#[derive(Default)]
pub(in crate::correlate) struct Followers {
    by_source: Map<ObjectRef, Vec<ObjectRef>>,
    by_applier: Map<ObjectRef, Vec<ObjectRef>>,
    /// HelmCharts by the source their `sourceRef` names.
    charts: Map<ObjectRef, Vec<ObjectRef>>,
}

impl Followers {
    /// The reconciler `o`'s last observation changes from `old` to `new` (`None`: deleted).
    pub fn update(
        &mut self,
        o: &ObjectRef,
        old: Option<&ReconcilerObs>,
        new: Option<&ReconcilerObs>,
    ) {
        fn source(r: Option<&ReconcilerObs>) -> Option<&ObjectRef> {
            r.and_then(|r| r.source_ref.as_ref())
        }
        fn applier(r: Option<&ReconcilerObs>) -> Option<&ObjectRef> {
            r.and_then(|r| r.applied_by.as_deref())
        }
        relink(&mut self.by_source, o, source(old), source(new));
        relink(&mut self.by_applier, o, applier(old), applier(new));
    }

    /// The source `o` (a HelmChart, if it names a source)'s last observation changes from
    /// `old` to `new` (`None`: deleted).
    pub fn update_chart(
        &mut self,
        o: &ObjectRef,
        old: Option<&SourceObs>,
        new: Option<&SourceObs>,
    ) {
        fn source(s: Option<&SourceObs>) -> Option<&ObjectRef> {
            s.and_then(|s| s.source_ref.as_deref())
        }
        relink(&mut self.charts, o, source(old), source(new));
    }

    /// HelmCharts whose last observation follows `source`.
    pub fn charts_of(&self, source: &ObjectRef) -> &[ObjectRef] {
        self.charts.get(source).map_or(&[], Vec::as_slice)
    }

    /// Reconcilers whose last observation follows `source`.
    pub fn of_source(&self, source: &ObjectRef) -> &[ObjectRef] {
        self.by_source.get(source).map_or(&[], Vec::as_slice)
    }

    /// Reconcilers whose last observation says `applier` applied them.
    pub fn applied_by(&self, applier: &ObjectRef) -> &[ObjectRef] {
        self.by_applier.get(applier).map_or(&[], Vec::as_slice)
    }

    /// (sources followed by reconcilers, Kustomizations applying reconcilers, sources
    /// followed by HelmCharts)
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.by_source.len(),
            self.by_applier.len(),
            self.charts.len(),
        )
    }
}

fn relink(
    index: &mut Map<ObjectRef, Vec<ObjectRef>>,
    o: &ObjectRef,
    old: Option<&ObjectRef>,
    new: Option<&ObjectRef>,
) {
    // Most observations repeat what the last one followed: nothing to relink, nothing copied.
    if old == new {
        return;
    }
    if let Some(old) = old {
        if let Some(list) = index.get_mut(old) {
            list.retain(|r| r != o);
            if list.is_empty() {
                index.remove(old);
            }
        }
    }
    if let Some(new) = new {
        let list = index.entry(new.clone()).or_default();
        if !list.contains(o) {
            list.push(o.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn reconciler(name: &str, source: Option<&str>, applier: Option<&str>) -> ReconcilerObs {
        ReconcilerObs {
            source_ref: source.map(|s| ObjectRef::new(Kind::GitRepository, "flux-system", s)),
            applied_by: applier
                .map(|a| Box::new(ObjectRef::new(Kind::Kustomization, "flux-system", a))),
            ..crate::correlate::tests::fixtures::ks(name)
        }
    }

    #[test]
    fn followers_move_with_the_last_observation_and_go_with_it() {
        let git = |s: &str| ObjectRef::new(Kind::GitRepository, "flux-system", s);
        let ks = |s: &str| ObjectRef::new(Kind::Kustomization, "flux-system", s);
        let mut f = Followers::default();
        let a1 = reconciler("a", Some("repo"), Some("root"));
        let b = reconciler("b", Some("repo"), None);
        f.update(&ks("a"), None, Some(&a1));
        f.update(&ks("b"), None, Some(&b));
        assert_eq!(f.of_source(&git("repo")), [ks("a"), ks("b")]);
        assert_eq!(f.applied_by(&ks("root")), [ks("a")]);
        // The same links again change nothing; a new source moves it.
        f.update(&ks("a"), Some(&a1), Some(&a1));
        let a2 = reconciler("a", Some("other"), Some("root"));
        f.update(&ks("a"), Some(&a1), Some(&a2));
        assert_eq!(f.of_source(&git("repo")), [ks("b")]);
        assert_eq!(f.of_source(&git("other")), [ks("a")]);
        f.update(&ks("a"), Some(&a2), None);
        f.update(&ks("b"), Some(&b), None);
        assert_eq!(f.sizes(), (0, 0, 0), "nothing left of deleted reconcilers");
    }
}
