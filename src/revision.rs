//! Revision strings as Flux writes them, and the content identity they share with a promotion.
//!
//! Flux writes `main@sha1:<40 hex>`, `sha1:<40 hex>`, legacy `main/<40 hex>`,
//! `<tag>@sha256:<64 hex>`, `sha256:<64 hex>` and chart versions `6.0.3+<12 hex>`. A promotion
//! names a commit SHA or a manifest digest. Two revisions belong together when they name the
//! same commit or digest; this module is the only place that knows how to tell.

use std::borrow::Cow;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit SHA (40 hex, lower case as written) named by a Git revision string.
pub fn commit_sha(rev: &str) -> Option<&str> {
    let tail = rev.rsplit_once('@').map_or(rev, |(_, t)| t);
    if let Some(h) = tail.strip_prefix("sha1:") {
        return is_hex(h, 40).then_some(h);
    }
    if is_hex(tail, 40) {
        return Some(tail);
    }
    // legacy pre-Flux-2.0 "main/<40 hex>"
    let legacy = rev.rsplit_once('/').map(|(_, t)| t)?;
    is_hex(legacy, 40).then_some(legacy)
}

/// The branch or tag a Git revision names (`main@sha1:…` → `main`, `refs/tags/v1@sha1:…` →
/// `v1`, legacy `main/<40 hex>` → `main`); `None` for a bare commit or a non-Git revision.
pub fn ref_name(rev: &str) -> Option<&str> {
    let commit = commit_sha(rev)?;
    let head = match rev.rsplit_once('@') {
        Some((head, _)) => head,
        None => rev.strip_suffix(commit)?.strip_suffix('/')?,
    };
    let head = head
        .strip_prefix("refs/heads/")
        .or_else(|| head.strip_prefix("refs/tags/"))
        .unwrap_or(head);
    (!head.is_empty()).then_some(head)
}

/// The repository name in a repository URL: its last path segment without `.git`
/// (`https://github.com/org/app.git` → `app`).
pub fn repository_name(url: &str) -> Option<&str> {
    let path = url.trim_end_matches('/');
    let last = path.rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty() && !name.contains('@') && path.contains(['/', ':'])).then_some(name)
}

/// The sha256 digest (64 hex) named by an OCI revision (`tag@sha256:…`, `sha256:…`).
pub fn digest_hex(rev: &str) -> Option<&str> {
    let tail = rev.rsplit_once('@').map_or(rev, |(_, t)| t);
    let h = tail.strip_prefix("sha256:")?;
    is_hex(h, 64).then_some(h)
}

/// The tag part of an OCI revision `tag@sha256:…`.
pub fn oci_tag(rev: &str) -> Option<&str> {
    let (tag, tail) = rev.rsplit_once('@')?;
    (tail.starts_with("sha256:") && !tag.is_empty()).then_some(tag)
}

/// The 12-hex suffix Flux appends to chart versions (`6.6.1+0cc9a8446c95`): the first 12 hex of
/// the OCI digest or of the source commit. A HelmChart with `reconcileStrategy: Revision` and
/// `valuesFiles` appends its generation too (`6.6.1+0cc9a8446c95.3`).
pub fn chart_suffix(rev: &str) -> Option<&str> {
    let (_, s) = rev.rsplit_once('+')?;
    let (hex, generation) = s.split_once('.').unwrap_or((s, "0"));
    let generation = !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit());
    (is_hex(hex, 12) && generation).then_some(hex)
}

/// The keys a revision string can be looked up by: full commit or digest hex, or a 12-hex
/// prefix. Promotions are indexed by the same keys (see [`promotion_keys`]).
pub fn lookup_keys(rev: &str) -> Vec<String> {
    lookup_key_refs(rev).map(Cow::into_owned).collect()
}

/// [`lookup_keys`], copied only where the revision is not in lower case already (Flux
/// writes it in lower case): what looks keys up needs no copy of them.
pub fn lookup_key_refs(rev: &str) -> impl Iterator<Item = Cow<'_, str>> {
    fn lower(h: &str) -> Cow<'_, str> {
        if h.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(h.to_ascii_lowercase())
        } else {
            Cow::Borrowed(h)
        }
    }
    [commit_sha(rev), digest_hex(rev), chart_suffix(rev)]
        .into_iter()
        .flatten()
        .map(lower)
}

/// The keys a promotion's commit or digest is indexed by: the full hex and its 12-hex prefix.
pub fn promotion_keys(hex_id: &str) -> [String; 2] {
    let full = hex_id.to_ascii_lowercase();
    let short = full[..12.min(full.len())].to_string();
    [full, short]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
    const DIG: &str = "3b6cdcc7adcc9a84d3214ee1c029543789d90b5ae69debe9efa3f66e982875de";

    #[test]
    fn chart_versions_name_their_source_revision() {
        assert_eq!(chart_suffix("6.6.1+0cc9a8446c95"), Some("0cc9a8446c95"));
        // `reconcileStrategy: Revision` with `valuesFiles`: the HelmChart's generation follows.
        assert_eq!(chart_suffix("6.6.1+0cc9a8446c95.3"), Some("0cc9a8446c95"));
        // `valuesFiles` alone: the generation only.
        assert_eq!(chart_suffix("6.6.1+3"), None);
        assert_eq!(chart_suffix("6.6.1+0cc9a8446c95.x"), None);
        assert_eq!(chart_suffix("6.6.1"), None);
    }

    #[test]
    fn git_revisions_name_their_commit() {
        for rev in [
            format!("main@sha1:{SHA}"),
            format!("v1.0.1@sha1:{SHA}"),
            format!("sha1:{SHA}"),
            format!("refs/pull/1/head@sha1:{SHA}"),
            format!("main/{SHA}"),
            SHA.to_string(),
        ] {
            assert_eq!(commit_sha(&rev), Some(SHA), "{rev}");
            assert_eq!(digest_hex(&rev), None, "{rev}");
        }
        assert_eq!(commit_sha("main@sha1:abc"), None);
    }

    #[test]
    fn git_revisions_name_their_ref() {
        assert_eq!(ref_name(&format!("main@sha1:{SHA}")), Some("main"));
        assert_eq!(
            ref_name(&format!("refs/tags/v1.0.1@sha1:{SHA}")),
            Some("v1.0.1")
        );
        assert_eq!(ref_name(&format!("refs/heads/dev@sha1:{SHA}")), Some("dev"));
        assert_eq!(ref_name(&format!("main/{SHA}")), Some("main"));
        assert_eq!(ref_name(&format!("sha1:{SHA}")), None);
        assert_eq!(ref_name(SHA), None);
        assert_eq!(ref_name(&format!("latest@sha256:{DIG}")), None);
    }

    #[test]
    fn repository_names_drop_owner_and_suffix() {
        assert_eq!(
            repository_name("https://github.com/org/app.git"),
            Some("app")
        );
        assert_eq!(repository_name("ssh://git@github.com/org/app"), Some("app"));
        assert_eq!(repository_name("git@github.com:app.git"), Some("app"));
        assert_eq!(
            repository_name("https://gitlab.com/g/sub/app/"),
            Some("app")
        );
        assert_eq!(repository_name("app"), None);
    }

    #[test]
    fn oci_revisions_name_their_digest_and_tag() {
        let rev = format!("latest@sha256:{DIG}");
        assert_eq!(digest_hex(&rev), Some(DIG));
        assert_eq!(oci_tag(&rev), Some("latest"));
        assert_eq!(digest_hex(&format!("sha256:{DIG}")), Some(DIG));
        assert_eq!(oci_tag(&format!("sha256:{DIG}")), None);
        assert_eq!(commit_sha(&rev), None);
    }

    #[test]
    fn chart_versions_carry_a_digest_prefix() {
        assert_eq!(chart_suffix("6.6.1+0cc9a8446c95"), Some("0cc9a8446c95"));
        assert_eq!(chart_suffix("6.0.3+1"), None);
        assert_eq!(chart_suffix("6.0.3"), None);
        assert_eq!(lookup_keys("6.6.1+0cc9a8446c95"), vec!["0cc9a8446c95"]);
        assert_eq!(promotion_keys(DIG)[1], &DIG[..12]);
    }
}
