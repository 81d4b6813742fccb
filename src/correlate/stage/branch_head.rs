//! Busy branches and branches nobody follows: a GitRepository stores only the head of the
//! branch it follows, at the time it fetches.
//!
//! Part of the source stage (`source` calls in here when a GitRepository stores a revision;
//! `verdict` asks before it gives up on a source that never came):
//! - **Overtaken.** A reported commit that a newer push overtook before the fetch is never
//!   stored: the newer revision delivers it. The promotion follows that revision's delivery
//!   and says so on its root (`delivery.revision.delivered_as`).
//! - **Another branch.** Image automation may push to a branch (`spec.git.push.branch`) that
//!   no GitRepository follows: nothing in the cluster will fetch the commit, and the
//!   promotion ends `skip` with the branch named, instead of `RevisionNotFound`.
//!
//! Only the objects' own times and specs are read, so a restarted agent decides the same.

use jiff::Timestamp;

use super::super::engine::Engine;
use super::super::promotion::{push_span, Promotion};
use super::super::span::StageResult;
use super::super::Map;
use super::source::{stored, SourceState};
use crate::model::{Kind, ObjectRef, SourceObs};
use crate::revision;
use crate::trace::{attr, Stage};

/// The branch a GitRepository fetches: `spec.ref.branch`, else the branch its revision names.
fn branch_of(obs: &SourceObs) -> Option<&str> {
    obs.ref_branch
        .as_deref()
        .or_else(|| obs.revision.as_deref().and_then(revision::ref_name))
}

/// A repository URL as a key: no trailing `/` or `.git`.
fn same_repository(a: &str, b: &str) -> bool {
    let key = |u: &str| {
        let u = u.trim_end_matches('/');
        u.strip_suffix(".git").unwrap_or(u).to_string()
    };
    key(a) == key(b)
}

fn git_sources(sources: &Map<ObjectRef, SourceState>) -> impl Iterator<Item = &SourceObs> {
    sources
        .values()
        .filter_map(|s| s.last.as_deref())
        .filter(|s| s.object.kind == Kind::GitRepository)
}

/// Whether `p`, a reported Git promotion with no source yet, was overtaken by the revision
/// `obs` stored at `stored_at`: the report names the branch `obs` follows and another commit,
/// and the fetch came after the report.
fn overtaken(p: &Promotion, obs: &SourceObs, branch: &str, commit: &str, at: Timestamp) -> bool {
    let Some(reported) = p.report.as_ref().and_then(|r| r.revision.as_deref()) else {
        return false;
    };
    p.sources.is_empty()
        && p.digest.is_none()
        && p.superseded_by.is_none()
        && p.delivered_as.is_none()
        && revision::ref_name(reported) == Some(branch)
        && revision::commit_sha(reported).is_some_and(|c| !c.eq_ignore_ascii_case(commit))
        && at > p.start
        && obs.object.kind == Kind::GitRepository
}

impl Engine {
    /// The open promotions whose reported commit the revision `obs` stored overtook (not
    /// among `joined`, which named this revision themselves). Only when `obs` is the one
    /// GitRepository the agent knows that follows the reported branch: with several, which
    /// one the report meant is not known without the repository.
    pub(in crate::correlate) fn overtaken_by(
        &self,
        obs: &SourceObs,
        joined: &[String],
    ) -> Vec<String> {
        let (Some(branch), Some(rev), Some(at)) = (
            branch_of(obs),
            obs.revision.as_deref(),
            obs.artifact_updated,
        ) else {
            return Vec::new();
        };
        let Some(commit) = revision::commit_sha(rev) else {
            return Vec::new();
        };
        if !stored(obs)
            || git_sources(&self.sources)
                .any(|s| s.object != obs.object && branch_of(s) == Some(branch))
        {
            return Vec::new();
        }
        self.reg
            .values()
            .filter(|p| !joined.contains(&p.id) && overtaken(p, obs, branch, commit, at))
            .map(|p| p.id.clone())
            .collect()
    }

    /// `pid`'s reported commit was overtaken: the revision `obs` stored delivers it.
    pub(in crate::correlate) fn delivered_as(&mut self, pid: &str, obs: &SourceObs) {
        let Some(rev) = obs.revision.clone() else {
            return;
        };
        if let Some(p) = self.reg.get_mut(pid) {
            p.delivered_as = Some(rev.clone());
        }
        self.join_source(obs.artifact_updated.unwrap_or(self.now), pid, obs);
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        let reported = p.commit.clone().unwrap_or_default();
        if let Some(s) = p
            .sources
            .iter_mut()
            .find(|s| s.object.as_ref() == Some(&obs.object))
        {
            s.attrs
                .set(attr::DELIVERY_REVISION_DELIVERED_AS, rev.clone());
            s.summary = format!(
                "stored artifact for revision {rev}: reported commit {reported} overtaken before the fetch"
            );
        }
    }
}

/// The branch an automated promotion's commit was pushed to, when no GitRepository the agent
/// knows follows that branch of the automation's repository. Known only once the
/// automation's own GitRepository (`spec.sourceRef`) is.
pub(in crate::correlate) fn unfollowed_branch(
    sources: &Map<ObjectRef, SourceState>,
    p: &Promotion,
) -> Option<String> {
    let (source, branch) = p.pushed_to.as_ref()?;
    let url = sources.get(source)?.last.as_ref()?.url.as_deref()?;
    let followed = git_sources(sources).any(|s| {
        s.url.as_deref().is_some_and(|u| same_repository(u, url))
            && branch_of(s) == Some(branch.as_str())
    });
    (!followed).then(|| branch.clone())
}

/// Ends an automated promotion whose commit went to a branch nobody follows: its source stage
/// is skipped, naming the branch.
pub(in crate::correlate) fn skip_unfollowed(p: &mut Promotion, branch: &str, cluster: &str) {
    let at = p.image.as_ref().and_then(|s| s.end).unwrap_or(p.start);
    let mut s = p.placeholder(Stage::Source, cluster, at, at);
    s.attrs.set(attr::VCS_REF_HEAD_NAME, branch.to_string());
    s.attrs
        .set_opt(attr::VCS_REF_HEAD_REVISION, p.commit.clone());
    let commit = p.commit.as_deref().unwrap_or_default();
    let short = commit.get(..7).unwrap_or(commit);
    s.finish(
        at,
        StageResult::NoChange,
        format!(
            "commit {short} pushed to branch '{branch}', which no GitRepository follows: nothing fetches it"
        ),
    );
    push_span(&mut p.sources, s);
    p.unfollowed = Some(branch.to_string());
}
