//! What a CI run says about itself, from its environment: GitHub Actions and GitLab CI.
//!
//! Pure: the environment is passed in as a lookup function, so tests need not touch the
//! process environment. Empty variables count as unset.

use crate::model::PipelineRef;

/// The CI system a run was detected in, and what it tells about the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CiRun {
    /// `github-actions` or `gitlab-ci`.
    pub system: &'static str,
    /// The promotion id to use when none is given: GitHub `<run id>-<run attempt>`, GitLab
    /// `<pipeline id>`.
    pub default_id: Option<String>,
    /// `cicd.pipeline.name`, `cicd.pipeline.run.id`, `cicd.pipeline.run.url.full`.
    pub pipeline: PipelineRef,
    pub actor: Option<String>,
    /// The commit the run built (`vcs.ref.head.revision`).
    pub commit: Option<String>,
    /// When that commit was made (GitLab `CI_COMMIT_TIMESTAMP`), RFC 3339.
    pub commit_time: Option<String>,
}

/// Detects GitHub Actions (`GITHUB_ACTIONS=true`) or GitLab CI (`GITLAB_CI=true`).
pub fn detect(env: impl Fn(&str) -> Option<String>) -> Option<CiRun> {
    let var = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("GITHUB_ACTIONS").as_deref() == Some("true") {
        let run_id = var("GITHUB_RUN_ID");
        let attempt = var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_string());
        let url = match (var("GITHUB_SERVER_URL"), var("GITHUB_REPOSITORY"), &run_id) {
            (Some(server), Some(repo), Some(run)) => Some(format!(
                "{}/{}/actions/runs/{}",
                server.trim_end_matches('/'),
                repo,
                run
            )),
            _ => None,
        };
        return Some(CiRun {
            system: "github-actions",
            default_id: run_id.as_ref().map(|r| format!("{r}-{attempt}")),
            pipeline: PipelineRef {
                name: var("GITHUB_WORKFLOW"),
                run_id,
                url,
            },
            actor: var("GITHUB_ACTOR"),
            commit: var("GITHUB_SHA"),
            // GitHub gives no commit time in the environment: `git log` in the checkout does.
            commit_time: None,
        });
    }
    if var("GITLAB_CI").as_deref() == Some("true") {
        let run_id = var("CI_PIPELINE_ID");
        let project_url = var("CI_PROJECT_URL");
        let url = var("CI_PIPELINE_URL").or_else(|| match (&project_url, &run_id) {
            (Some(p), Some(r)) => Some(format!("{}/-/pipelines/{}", p.trim_end_matches('/'), r)),
            _ => None,
        });
        let name = var("CI_PIPELINE_NAME")
            .or_else(|| var("CI_PROJECT_PATH"))
            .or_else(|| project_url.as_deref().and_then(project_path));
        return Some(CiRun {
            system: "gitlab-ci",
            default_id: run_id.clone(),
            pipeline: PipelineRef { name, run_id, url },
            actor: var("GITLAB_USER_LOGIN"),
            commit: var("CI_COMMIT_SHA"),
            commit_time: var("CI_COMMIT_TIMESTAMP"),
        });
    }
    None
}

/// `group/project` from `https://gitlab.example.com/group/project`.
fn project_path(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (_, path) = rest.split_once('/')?;
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn github_actions() {
        let run = detect(env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "8812345"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_WORKFLOW", "release"),
            ("GITHUB_ACTOR", "alice"),
            ("GITHUB_SHA", "b66600c3599b6f77b1a8749101e556b86c5df749"),
        ]))
        .expect("detected");
        assert_eq!(run.system, "github-actions");
        assert_eq!(run.default_id.as_deref(), Some("8812345-2"));
        assert_eq!(run.pipeline.name.as_deref(), Some("release"));
        assert_eq!(run.pipeline.run_id.as_deref(), Some("8812345"));
        assert_eq!(
            run.pipeline.url.as_deref(),
            Some("https://github.com/acme/shop/actions/runs/8812345")
        );
        assert_eq!(run.actor.as_deref(), Some("alice"));
        assert_eq!(
            run.commit.as_deref(),
            Some("b66600c3599b6f77b1a8749101e556b86c5df749")
        );
    }

    #[test]
    fn gitlab_ci() {
        let run = detect(env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "90211"),
            ("CI_PROJECT_URL", "https://gitlab.example.com/acme/web"),
            ("GITLAB_USER_LOGIN", "bob"),
            ("CI_COMMIT_SHA", "78e7e93a2812ee6725fe1cbb2659ddc496d09657"),
        ]))
        .expect("detected");
        assert_eq!(run.system, "gitlab-ci");
        assert_eq!(run.default_id.as_deref(), Some("90211"));
        assert_eq!(run.pipeline.name.as_deref(), Some("acme/web"));
        assert_eq!(
            run.pipeline.url.as_deref(),
            Some("https://gitlab.example.com/acme/web/-/pipelines/90211")
        );
        assert_eq!(run.actor.as_deref(), Some("bob"));
    }

    #[test]
    fn nothing_outside_ci() {
        assert_eq!(detect(env(&[("CI", "true"), ("GITHUB_ACTIONS", "")])), None);
    }
}
