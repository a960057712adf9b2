//! `cairn why LABEL` and `cairn affected --since REF`.

use serde_json::json;

use super::{Loaded, Session, build_context};
use crate::action::ToolResolver;
use crate::engine::affected::affected_targets;
use crate::engine::history::{Manifest, explain};
use crate::engine::{
    AnalysisError, BuildContext, BuildOptions, CacheChain, DryInfo, DryRun, run_build,
};
use crate::error::Error;
use crate::exec::dry::DryRunExecutor;
use crate::graph::Label;
use crate::report::{self, ConsoleReporter};
use crate::vcs;

/// Computes the current actions of `roots` and their dependencies (tests included) without
/// building anything, from the local store alone.
pub(crate) fn dry_run(s: &Session, loaded: &Loaded, roots: Vec<Label>) -> Result<DryRun, Error> {
    let warn = |_: &str| {};
    let cache = CacheChain::local(&loaded.store, &s.ws.root, &warn);
    Ok(dry_run_with(s, loaded, &cache, roots))
}

/// `dry_run` looking results up in `cache` (whose remote hits are stored locally).
pub(crate) fn dry_run_with(
    s: &Session,
    loaded: &Loaded,
    cache: &CacheChain,
    roots: Vec<Label>,
) -> DryRun {
    let reporter = ConsoleReporter::quiet();
    let tools = ToolResolver::new(s.ws.tool_path(), Some(&loaded.store));
    let dry = DryRun::default();
    let context = BuildContext {
        recorder: Some(&dry),
        restore: false,
        ..build_context(s, loaded, cache, &DryRunExecutor, &reporter, &tools)
    };
    run_build(
        &context,
        &BuildOptions {
            roots,
            run_tests: true,
            jobs: s.jobs(),
            lookahead: if cache.has_remotes() {
                s.remote_jobs()
            } else {
                0
            },
            keep_going: true,
        },
    );
    dry
}

pub(crate) fn why(s: &Session, text: &str) -> Result<u8, Error> {
    let loaded = s.load()?;
    let graph = loaded.graph();
    let label = s.label(graph, text)?;
    let kind = graph.get(&label).expect("label was checked").kind;
    if !kind.runs() {
        return Err(Error::Usage(format!(
            "`{label}` is a {}: it has no action of its own (ask about the targets that use it)",
            kind.as_str()
        )));
    }
    let dry = dry_run(s, &loaded, vec![label.clone()])?;
    s.save_states(&loaded);
    let results = dry.results.into_inner().unwrap_or_else(|p| p.into_inner());
    let explainer = Explainer {
        s,
        loaded: &loaded,
        results: &results,
    };
    let info = results
        .get(&label)
        .ok_or_else(|| Error::Io(format!("Could not compute the action of `{label}`")))?;
    let verdict = explainer.explain(&label, 0)?;
    let (state, mut reasons, last_key) = (verdict.state, verdict.reasons, verdict.last_key);
    // pass_env values reach the command without entering the key: say so, since a change to
    // them never causes a rebuild.
    let pass_env: Vec<String> = info.action.pass_env.keys().cloned().collect();
    let declared = &graph.get(&label).expect("label was checked").pass_env;
    if !declared.is_empty() {
        reasons.push(format!(
            "note: pass_env [{}] reach the command but not the key (set here: [{}])",
            declared.join(", "),
            pass_env.join(", ")
        ));
    }
    if s.opts.json {
        report::print_json(&json!({
            "label": label.to_string(),
            "state": state,
            "cache_hit": info.hit,
            "current_key": info.action.key.to_string(),
            "last_key": last_key,
            "reasons": reasons,
            "pass_env": declared,
        }));
    } else {
        let head = match state {
            "changed" if info.hit => {
                format!("{label} is in the cache, although it changed since its last run here:")
            }
            "changed" => format!("{label} will run again because:"),
            _ => format!("{label}:"),
        };
        let mut text = s.style.bold(&head);
        for r in &reasons {
            text.push_str(&format!("\n  {r}"));
        }
        report::print_stdout(&format!("{text}\n"));
    }
    Ok(0)
}

/// What `why` concludes for one target.
struct Verdict {
    state: &'static str,
    reasons: Vec<String>,
    last_key: Option<String>,
}

struct Explainer<'a> {
    s: &'a Session<'a>,
    loaded: &'a Loaded,
    results: &'a std::collections::HashMap<Label, DryInfo>,
}

/// How deep `why` follows dependencies that must be rebuilt first.
const MAX_DEPTH: usize = 4;

impl Explainer<'_> {
    fn explain(&self, label: &Label, depth: usize) -> Result<Verdict, Error> {
        let info = self
            .results
            .get(label)
            .ok_or_else(|| Error::Io(format!("Could not compute the action of `{label}`")))?;
        let history = self
            .loaded
            .store
            .history(&self.s.workspace_key(), &label.to_string())
            .map_err(|e| self.s.store_error(e))?;
        let Some(last) = history.first() else {
            let reason = if info.hit {
                "never built in this store's history for this workspace, but its result is in the store (built elsewhere): the next build is a cache hit"
            } else {
                "never built in this store: the next build runs it"
            };
            return Ok(Verdict {
                state: "never_built",
                reasons: vec![reason.to_string()],
                last_key: None,
            });
        };
        let last_key = Some(format!("blake3:{}", last.key.hex()));
        if last.key.hash == info.action.key.hash && info.unknown_deps.is_empty() {
            let reason = if info.hit {
                "no change: next build is a cache hit".to_string()
            } else {
                format!(
                    "no change since its last run ({}), but the store holds no result for it, so the next build runs it{}",
                    last.status,
                    if last.status == "failed" {
                        " (failures are not cached)"
                    } else {
                        ""
                    }
                )
            };
            return Ok(Verdict {
                state: "unchanged",
                reasons: vec![reason],
                last_key,
            });
        }
        let old = Manifest::decode(&last.manifest).unwrap_or_default();
        let current = Manifest::of(&info.action);
        let mut reasons = explain(self.loaded.graph(), &old, &current, &info.unknown_deps);
        // Say why each dependency that must run first does: that is the root cause.
        for dep in &info.unknown_deps {
            let Some(line) = reasons
                .iter_mut()
                .find(|r| r.starts_with(&format!("dependency {dep} must")))
            else {
                continue;
            };
            if depth < MAX_DEPTH {
                let inner = self.explain(dep, depth + 1)?;
                *line = format!(
                    "dependency {dep} must be rebuilt first, so the outputs it provides are not known yet; it changed because:\n{}",
                    inner
                        .reasons
                        .iter()
                        .map(|r| format!("    {}", r.replace('\n', "\n  ")))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        if reasons.is_empty() {
            reasons.push(if info.hit {
                "its key differs from the last run's but the store has a result for it: the next build is a cache hit".to_string()
            } else {
                "its key changed but nothing cairn records differs (a different cairn version?)".to_string()
            });
        }
        Ok(Verdict {
            state: "changed",
            reasons,
            last_key,
        })
    }
}

/// A GitHub Actions job matrix (`strategy.matrix: ${{ fromJSON(...) }}`): one entry per
/// target (`target`, `package`), or per package (`package`, `targets` space-separated).
/// Empty, it is `{"include":[]}`: guard the job with `if: ... != '{"include":[]}'`.
fn github_matrix(labels: &[Label], format: super::AffectedFormat) -> serde_json::Value {
    let package = |l: &Label| {
        if l.package.is_empty() {
            "//".to_string()
        } else {
            l.package.to_string()
        }
    };
    let include: Vec<serde_json::Value> = if format == super::AffectedFormat::GithubMatrix {
        labels
            .iter()
            .map(|l| json!({ "target": l.to_string(), "package": package(l) }))
            .collect()
    } else {
        let mut by_package: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for l in labels {
            by_package
                .entry(package(l))
                .or_default()
                .push(l.to_string());
        }
        by_package
            .into_iter()
            .map(|(p, t)| json!({ "package": p, "targets": t.join(" ") }))
            .collect()
    };
    json!({ "include": include })
}

pub(crate) fn affected(
    s: &Session,
    since: &str,
    format: super::AffectedFormat,
    patterns: &[String],
) -> Result<u8, Error> {
    let loaded = s.load()?;
    s.save_states(&loaded);
    let graph = loaded.graph();
    let changed = vcs::changed_files(&s.ws.root, since).map_err(|e| Error::Usage(e.to_string()))?;
    let selected = graph
        .matching(&s.patterns(patterns)?)
        .map_err(AnalysisError::from)?;
    let affected: Vec<Label> = affected_targets(&s.ws.root, &loaded.analysis, &changed)
        .into_iter()
        .filter(|l| selected.contains(l))
        .collect();
    let labels: Vec<String> = affected.iter().map(|l| l.to_string()).collect();
    if format != super::AffectedFormat::Lines {
        report::print_json(&github_matrix(&affected, format));
    } else if s.opts.json {
        report::print_json(&json!({ "since": since, "changed_files": changed, "targets": labels }));
    } else {
        let mut out = labels.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        report::print_stdout(&out);
    }
    Ok(0)
}
