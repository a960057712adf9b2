//! Git, by subprocess (as Turborepo does): the files that differ between a revision and the
//! working tree, including uncommitted and untracked ones. Never writes to the repository.

use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub(crate) enum VcsError {
    #[error("Cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("`git {args}` failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error(
        "`{since}` is not in this repository's history, which is a shallow clone (CI checkouts often keep one commit): fetch the history it needs first, e.g. `git fetch --deepen=50` (or `git fetch origin main --depth=50` for a branch); with GitHub Actions, `actions/checkout` with `fetch-depth: 0`"
    )]
    Shallow { since: String },
    #[error("`{since}` is not a commit of this repository")]
    Unknown { since: String },
}

fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>, VcsError> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .map_err(VcsError::Spawn)?;
    if !out.status.success() {
        return Err(VcsError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn split_z(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Paths (relative to `root`, which may be a subdirectory of the repository) that differ
/// between `since` and the working tree: committed, staged and unstaged changes, deletions,
/// and untracked files that are not ignored.
/// A shallow clone lacking `since` is an error naming the fetch that gives it: cairn never
/// fetches by itself (it does not write to the repository or reach the network).
pub(crate) fn changed_files(root: &Path, since: &str) -> Result<Vec<String>, VcsError> {
    let found = git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{since}^{{commit}}"),
        ],
    );
    if let Err(VcsError::Git { .. }) = found {
        let shallow = git(root, &["rev-parse", "--is-shallow-repository"])?;
        let since = since.to_string();
        return Err(if shallow.starts_with(b"true") {
            VcsError::Shallow { since }
        } else {
            VcsError::Unknown { since }
        });
    }
    found?;
    let mut files: Vec<String> = split_z(&git(
        root,
        &[
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--relative",
            since,
            "--",
        ],
    )?)
    .collect();
    files.extend(split_z(&git(
        root,
        &[
            "ls-files",
            "--others",
            "--exclude-standard",
            "-z",
            "--",
            ".",
        ],
    )?));
    files.sort();
    files.dedup();
    Ok(files)
}
