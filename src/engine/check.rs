//! `build --check` (Nix's `--check`): a cached action is run again and every output digest
//! compared with the cached result's, so non-deterministic actions are found.

use std::collections::BTreeSet;

use cairn_store::FileInfo;

use super::outputs::Provides;
use super::scheduler::BuildContext;
use crate::action::PreparedAction;
use crate::exec::ExecOutcome;
use crate::graph::Target;
use crate::workspace::WorkspacePath;

/// Runs `action` again and compares its outputs with `cached`. Returns what differs, if
/// anything (or why the re-run failed).
pub(super) fn check_reproducible(
    ctx: &BuildContext,
    target: &Target,
    action: &PreparedAction,
    cached: &Provides,
) -> Option<String> {
    let outcome = match ctx.executor.execute(&target.label, action) {
        Ok(o) => o,
        Err(e) => return Some(format!("could not be re-run for --check: {e}")),
    };
    let result = match outcome {
        ExecOutcome::Success { result, .. } => result,
        ExecOutcome::Failed(f) | ExecOutcome::TimedOut(f) => {
            return Some(format!("failed when re-run for --check: {}", f.message));
        }
        ExecOutcome::Cancelled | ExecOutcome::NotRun => {
            return Some("failed when re-run for --check: it did not run".to_string());
        }
    };
    let fresh = match ctx.outputs_of(&action.key, &action.working_dir, &result, false) {
        Ok(f) => f,
        Err(e) => return Some(format!("could not read its re-run outputs: {e}")),
    };
    let mut differ = Vec::new();
    // Both versions of each differing file, for `diff`.
    let kept = ctx
        .cache
        .store()
        .logs_dir()
        .join("check")
        .join(target.label.package_dir())
        .join(&target.label.name);
    let _ = std::fs::remove_dir_all(&kept);
    let keep = |path: &WorkspacePath, info: Option<&FileInfo>, which: &str| {
        if let Some(info) = info {
            let dest = kept.join(format!("{path}.{which}"));
            let _ = dest.parent().map(std::fs::create_dir_all);
            let _ = ctx
                .cache
                .store()
                .cas()
                .write_new_file(&info.digest, &dest, false);
        }
    };
    let (cached_links, fresh_links) = (&cached.links, &fresh.links);
    for path in cached_links
        .keys()
        .chain(fresh_links.keys())
        .collect::<BTreeSet<_>>()
    {
        let (a, b) = (cached_links.get(path), fresh_links.get(path));
        if a != b {
            let show = |t: Option<&String>| t.map_or("missing".to_string(), |t| format!("-> {t}"));
            differ.push(format!("{path} ({} cached, {} now)", show(a), show(b)));
        }
    }
    let (cached, fresh) = (&cached.files, &fresh.files);
    for path in cached.keys().chain(fresh.keys()).collect::<BTreeSet<_>>() {
        let (a, b) = (cached.get(path), fresh.get(path));
        if a.map(|i| i.digest) != b.map(|i| i.digest) {
            let show = |i: Option<&FileInfo>| {
                i.map_or("missing".to_string(), |i| {
                    format!("blake3:{}", i.digest.hex())
                })
            };
            keep(path, a, "cached");
            keep(path, b, "now");
            differ.push(format!(
                "\n    {path}\n      cached: {}\n      now:    {}",
                show(a),
                show(b)
            ));
        }
    }
    (!differ.is_empty()).then(|| {
        format!(
            "is not reproducible: re-running it changed{}\n  both versions are kept in {} (`diff -r` them)",
            differ.join(""),
            kept.display()
        )
    })
}
