//! The core builtins of BUILD files: `glob`, `filegroup`, `action`, `test`, `group` and
//! `package_name`. Each checks its attributes and raises errors inside the call, so Starlark
//! attaches the call site (file, line, column) to every message.
// Builtins take one parameter per BUILD attribute (the macro-generated code cannot carry the allow).
#![allow(clippy::too_many_arguments)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use starlark::any::ProvidesStaticType;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::UnpackDictEntries;
use starlark::values::list::UnpackList;
use starlark::values::none::{NoneOr, NoneType};

use crate::graph::{Kind, Label, Location, Target};
use crate::workspace::WorkspacePath;

/// Default `timeout` of `action`.
const ACTION_TIMEOUT: &str = "10m";
/// Default `timeout` of `test`.
const TEST_TIMEOUT: &str = "5m";

/// What a BUILD file's evaluation collects; reachable from builtins through `eval.extra`.
#[derive(ProvidesStaticType)]
pub(crate) struct PackageContext {
    pub package: String,
    /// Files the package owns, package-relative, sorted (from the workspace scan).
    pub files: Arc<Vec<String>>,
    pub targets: RefCell<Vec<Target>>,
    /// Paths returned by `glob()`.
    pub globbed: RefCell<HashSet<WorkspacePath>>,
    /// The tool path, for `host_tools()`.
    pub tool_path: Arc<Vec<std::path::PathBuf>>,
    /// What `host_tools()` asked: tool name → whether it was found.
    pub probes: RefCell<std::collections::BTreeMap<String, bool>>,
}

impl PackageContext {
    pub fn new(
        package: String,
        files: Arc<Vec<String>>,
        tool_path: Arc<Vec<std::path::PathBuf>>,
    ) -> PackageContext {
        PackageContext {
            package,
            files,
            targets: RefCell::default(),
            globbed: RefCell::default(),
            tool_path,
            probes: RefCell::default(),
        }
    }
}

fn context<'a>(eval: &'a Evaluator) -> anyhow::Result<&'a PackageContext> {
    eval.extra
        .and_then(|e| e.downcast_ref::<PackageContext>())
        .ok_or_else(|| {
            anyhow!("Targets can only be declared while a BUILD.star file is evaluated, not at the top level of a `.star` file")
        })
}

/// The BUILD.star call site of the builtin being run (the outermost frame that has one).
fn call_site(eval: &Evaluator) -> Location {
    let stack = eval.call_stack();
    let span = stack
        .frames
        .iter()
        .find_map(|f| f.location.clone())
        .or_else(|| eval.call_stack_top_location());
    match span {
        Some(span) => {
            let r = span.resolve();
            Location {
                file: r.file.trim_start_matches("//").to_string(),
                line: r.span.begin.line + 1,
                column: r.span.begin.column + 1,
            }
        }
        None => Location {
            file: "<unknown>".into(),
            line: 0,
            column: 0,
        },
    }
}

/// Parses `"10m"`, `"30s"`, `"500ms"`, `"1h"` or a bare number of seconds.
pub(crate) fn parse_timeout(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (num, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (text, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        anyhow!(
            "Invalid timeout `{text}`: expected e.g. `\"30s\"`, `\"10m\"`, `\"1h\"` or `\"500ms\"`"
        )
    })?;
    if n == 0 {
        bail!("Invalid timeout `{text}`: it must be positive");
    }
    Ok(n * unit_ms)
}

struct Attrs {
    name: String,
    kind: Kind,
    srcs: Vec<String>,
    deps: Vec<String>,
    cmd: String,
    outs: Vec<String>,
    out_dirs: Vec<String>,
    env: Vec<(String, String)>,
    tools: Vec<String>,
    timeout: String,
    flaky: i32,
    tags: Vec<String>,
    pass_env: Vec<String>,
    platform: Vec<(String, String)>,
    digest: Option<String>,
}

impl Attrs {
    fn new(name: &str, kind: Kind) -> Attrs {
        Attrs {
            name: name.to_string(),
            kind,
            srcs: vec![],
            deps: vec![],
            cmd: String::new(),
            outs: vec![],
            out_dirs: vec![],
            env: vec![],
            tools: vec![],
            timeout: ACTION_TIMEOUT.to_string(),
            flaky: 0,
            tags: vec![],
            pass_env: vec![],
            platform: vec![],
            digest: None,
        }
    }
}

fn declare(eval: &Evaluator, attrs: Attrs) -> anyhow::Result<NoneType> {
    let ctx = context(eval)?;
    let location = call_site(eval);
    let pkg = ctx.package.as_str();
    let label = Label::parse(&format!(":{}", attrs.name), pkg).map_err(|_| {
        anyhow!(
            "Invalid target name `{}`: use letters, digits and `_-.+=,@~`",
            attrs.name
        )
    })?;
    if let Some(first) = ctx.targets.borrow().iter().find(|t| t.label == label) {
        bail!(
            "Duplicate target name `{}` in package `//{pkg}` (first declared at {})",
            attrs.name,
            first.location
        );
    }
    if attrs.kind.runs() && attrs.cmd.trim().is_empty() {
        bail!("`{label}` has an empty `cmd`");
    }

    let mut deps: Vec<Label> = Vec::new();
    for dep in &attrs.deps {
        deps.push(Label::parse(dep, pkg).map_err(|e| anyhow!("In `deps` of `{label}`: {e}"))?);
    }
    let mut srcs: BTreeSet<WorkspacePath> = BTreeSet::new();
    for src in &attrs.srcs {
        if src.starts_with("//") || src.starts_with(':') {
            deps.push(Label::parse(src, pkg).map_err(|e| anyhow!("In `srcs` of `{label}`: {e}"))?);
            continue;
        }
        let path = WorkspacePath::in_package(pkg, src)
            .map_err(|e| anyhow!("Source `{src}` of `{label}` is not in its package: {e}"))?;
        srcs.insert(path);
    }
    deps.sort();
    deps.dedup();

    let outputs = |list: &[String], what: &str| -> anyhow::Result<Vec<WorkspacePath>> {
        let mut out = BTreeSet::new();
        for o in list {
            let path = WorkspacePath::in_package(pkg, o).map_err(|e| {
                anyhow!("Output `{o}` in `{what}` of `{label}` must be a path inside package `//{pkg}`: {e}")
            })?;
            if !out.insert(path) {
                bail!("Output `{o}` is listed twice in `{what}` of `{label}`");
            }
        }
        Ok(out.into_iter().collect())
    };
    let outs = outputs(&attrs.outs, "outs")?;
    let out_dirs = outputs(&attrs.out_dirs, "out_dirs")?;

    let mut env = BTreeMap::new();
    for (k, v) in attrs.env {
        if k.is_empty() || k.contains('=') {
            bail!("Invalid environment variable name `{k}` in `env` of `{label}`");
        }
        env.insert(k, v);
    }
    if attrs.flaky < 0 {
        bail!(
            "`flaky` of `{label}` must be 0 or more, not {}",
            attrs.flaky
        );
    }
    let timeout_ms = parse_timeout(&attrs.timeout).map_err(|e| anyhow!("In `{label}`: {e}"))?;
    for name in &attrs.pass_env {
        if name.is_empty() || name.contains('=') {
            bail!("Invalid environment variable name `{name}` in `pass_env` of `{label}`");
        }
        if env.contains_key(name) {
            bail!("`{name}` is in both `env` and `pass_env` of `{label}`");
        }
    }
    let mut platform = BTreeMap::new();
    for (k, v) in attrs.platform {
        if k.is_empty() {
            bail!("Empty property name in `platform` of `{label}`");
        }
        platform.insert(k, v);
    }
    let fixed_digest = match &attrs.digest {
        None => None,
        Some(text) => Some(text.parse::<cairn_store::Digest>().map_err(|_| {
            anyhow!(
                "Invalid `digest` {text:?} of `{label}`: expected \"blake3:\" and 64 hex digits (a wrong one is fine to start: the build prints the actual digest)"
            )
        })?),
    };
    ctx.targets.borrow_mut().push(Target {
        label,
        kind: attrs.kind,
        srcs: srcs.into_iter().collect(),
        deps,
        cmd: attrs.cmd,
        outs,
        out_dirs,
        env,
        tools: attrs.tools,
        timeout_ms,
        flaky: attrs.flaky as u32,
        tags: attrs.tags,
        pass_env: attrs.pass_env,
        platform,
        fixed_digest,
        location,
        definition: Default::default(),
    });
    Ok(NoneType)
}

fn compile_globs(patterns: &[String], what: &str) -> anyhow::Result<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            bail!(
                "Invalid pattern `{p}` in `{what}` of glob(): patterns are relative to the package and stay inside it"
            );
        }
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| anyhow!("Invalid pattern `{p}` in `{what}` of glob(): {e}"))?;
        builder.add(glob);
    }
    Ok(builder.build()?)
}

#[starlark_module]
pub(crate) fn register_builtins(builder: &mut GlobalsBuilder) {
    /// Files of this package matching any `include` pattern and no `exclude` pattern, sorted.
    /// Never matches files of subpackages, ignored files, or any target's declared outputs.
    fn glob<'v>(
        #[starlark(require = pos)] include: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] exclude: UnpackList<String>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Vec<String>> {
        let ctx = context(eval)?;
        let inc = compile_globs(&include.items, "include")?;
        let exc = compile_globs(&exclude.items, "exclude")?;
        let mut matched: Vec<String> = Vec::new();
        for f in ctx.files.iter() {
            let (name, utf8) = match f.strip_suffix(super::scan::NOT_UTF8) {
                Some(name) => (name, false),
                None => (f.as_str(), true),
            };
            if !inc.is_match(name) || exc.is_match(name) {
                continue;
            }
            if !utf8 {
                let shown = WorkspacePath::in_package(&ctx.package, name)
                    .map_or(name.to_string(), |p| p.to_string());
                bail!(
                    "glob() matches `{shown}`, whose name is not UTF-8 (shown with '\u{FFFD}' for the bytes that are not): cairn's paths are UTF-8 strings, as REAPI's are; rename the file or exclude it"
                );
            }
            matched.push(f.clone());
        }
        let mut globbed = ctx.globbed.borrow_mut();
        for f in &matched {
            if let Ok(p) = WorkspacePath::in_package(&ctx.package, f) {
                globbed.insert(p);
            }
        }
        Ok(matched)
    }

    /// The tools of `candidates` this machine has, in their order: names found on the tool
    /// path, absolute paths to an executable. For a matrix over what is installed:
    /// `[pytest(name = "test_" + py, python = py, ...) for py in host_tools(["python3.11",
    /// "python3.12"])]`. What was asked is recorded: installing or removing one of them makes
    /// the package evaluate again.
    fn host_tools<'v>(
        #[starlark(require = pos)] candidates: UnpackList<String>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Vec<String>> {
        let ctx = context(eval)?;
        let mut probes = ctx.probes.borrow_mut();
        let mut found = Vec::new();
        for name in candidates.items {
            if !name.starts_with('/') && (name.is_empty() || name.contains('/')) {
                bail!("host_tools(): `{name}` is neither a tool name nor an absolute path");
            }
            let here = crate::action::tools::find_tool(&ctx.tool_path, &name).is_some();
            probes.insert(name.clone(), here);
            if here {
                found.push(name);
            }
        }
        Ok(found)
    }

    /// The package of the BUILD file being evaluated (`"apps/web"`; `""` at the root).
    fn package_name(eval: &mut Evaluator) -> anyhow::Result<String> {
        Ok(context(eval)?.package.clone())
    }

    /// A named set of files (and labels of other targets) to use in `srcs` or `deps`.
    fn filegroup(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named, default = UnpackList::default())] srcs: UnpackList<String>,
        eval: &mut Evaluator,
    ) -> anyhow::Result<NoneType> {
        let mut a = Attrs::new(name, Kind::Filegroup);
        a.srcs = srcs.items;
        declare(eval, a)
    }

    /// A named set of targets, e.g. `group(name = "ci", deps = [...])`.
    fn group(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named, default = UnpackList::default())] deps: UnpackList<String>,
        eval: &mut Evaluator,
    ) -> anyhow::Result<NoneType> {
        let mut a = Attrs::new(name, Kind::Group);
        a.deps = deps.items;
        declare(eval, a)
    }

    /// A cached build step: `cmd` runs by `/bin/sh -c` in the package directory of a sandbox
    /// holding only `srcs` and the outputs of `deps`, and must create `outs` / `out_dirs`.
    /// `platform` adds REAPI platform properties a remote worker must match (e.g. `pool`).
    fn action(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named)] cmd: &str,
        #[starlark(require = named, default = UnpackList::default())] srcs: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] deps: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] outs: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] out_dirs: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())] env: UnpackDictEntries<
            String,
            String,
        >,
        #[starlark(require = named, default = UnpackList::default())] tools: UnpackList<String>,
        #[starlark(require = named, default = ACTION_TIMEOUT)] timeout: &str,
        #[starlark(require = named, default = UnpackList::default())] tags: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] pass_env: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())]
        platform: UnpackDictEntries<String, String>,
        eval: &mut Evaluator,
    ) -> anyhow::Result<NoneType> {
        if outs.items.is_empty() && out_dirs.items.is_empty() {
            bail!(
                "Action `{name}` declares no `outs` or `out_dirs`; an action without outputs is a `test`"
            );
        }
        let mut a = Attrs::new(name, Kind::Action);
        a.cmd = cmd.to_string();
        a.srcs = srcs.items;
        a.deps = deps.items;
        a.outs = outs.items;
        a.out_dirs = out_dirs.items;
        a.env = env.entries;
        a.tools = tools.items;
        a.timeout = timeout.to_string();
        a.tags = tags.items;
        a.pass_env = pass_env.items;
        a.platform = platform.entries;
        declare(eval, a)
    }

    /// A download or install that needs the network (`npm ci`, fetching a toolchain): the
    /// network is allowed, and the result is accepted only if the digest of its output tree
    /// equals `digest` (`"blake3:<64 hex>"`). Cached by that digest, as in Nix. `digests`
    /// instead gives one per platform (`{"linux-x86_64": …, "macos-aarch64": …}`: an install
    /// with per-platform packages, as npm's); a platform without one fails the build with the
    /// digest it produced, to add.
    fn fixed_output(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named)] cmd: &str,
        #[starlark(require = named, default = NoneOr::None)] digest: NoneOr<&str>,
        #[starlark(require = named, default = UnpackDictEntries::default())]
        digests: UnpackDictEntries<String, String>,
        #[starlark(require = named, default = UnpackList::default())] srcs: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] deps: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] outs: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] out_dirs: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())] env: UnpackDictEntries<
            String,
            String,
        >,
        #[starlark(require = named, default = UnpackList::default())] tools: UnpackList<String>,
        #[starlark(require = named, default = ACTION_TIMEOUT)] timeout: &str,
        #[starlark(require = named, default = UnpackList::default())] tags: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())]
        platform: UnpackDictEntries<String, String>,
        #[starlark(require = named, default = UnpackList::default())] pass_env: UnpackList<String>,
        eval: &mut Evaluator,
    ) -> anyhow::Result<NoneType> {
        if outs.items.is_empty() && out_dirs.items.is_empty() {
            bail!("fixed_output `{name}` declares no `outs` or `out_dirs`");
        }
        let digest = match (digest.into_option(), digests.entries.is_empty()) {
            (Some(d), true) => d.to_string(),
            (None, false) => digests
                .entries
                .iter()
                .find(|(platform, _)| *platform == host_platform())
                .map(|(_, d)| d.clone())
                // No digest yet for this platform: the build fails with the one to add.
                .unwrap_or_else(|| format!("blake3:{}", "0".repeat(64))),
            _ => {
                bail!("fixed_output `{name}` needs either `digest` or `digests` (one per platform)")
            }
        };
        let mut a = Attrs::new(name, Kind::FixedOutput);
        a.cmd = cmd.to_string();
        a.digest = Some(digest);
        a.srcs = srcs.items;
        a.deps = deps.items;
        a.outs = outs.items;
        a.out_dirs = out_dirs.items;
        a.env = env.entries;
        a.tools = tools.items;
        a.timeout = timeout.to_string();
        a.tags = tags.items;
        a.platform = platform.entries;
        // A token, a proxy, a registry mirror: host values that never enter the key (the
        // output is checked against `digest` whatever they were).
        a.pass_env = pass_env.items;
        declare(eval, a)
    }

    /// A cached check: passes when `cmd` exits 0. A passing test whose inputs are unchanged is
    /// not run again; `flaky = N` retries a failure up to N times. `reports = True` gives it
    /// `$TEST_OUTPUTS_DIR` (and `$XML_OUTPUT_FILE` in it), kept with its result.
    fn test(
        #[starlark(require = named)] name: &str,
        #[starlark(require = named)] cmd: &str,
        #[starlark(require = named, default = UnpackList::default())] srcs: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] deps: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())] env: UnpackDictEntries<
            String,
            String,
        >,
        #[starlark(require = named, default = UnpackList::default())] tools: UnpackList<String>,
        #[starlark(require = named, default = TEST_TIMEOUT)] timeout: &str,
        #[starlark(require = named, default = 0)] flaky: i32,
        #[starlark(require = named, default = UnpackList::default())] tags: UnpackList<String>,
        #[starlark(require = named, default = UnpackList::default())] pass_env: UnpackList<String>,
        #[starlark(require = named, default = UnpackDictEntries::default())]
        platform: UnpackDictEntries<String, String>,
        #[starlark(require = named, default = false)] reports: bool,
        eval: &mut Evaluator,
    ) -> anyhow::Result<NoneType> {
        let mut a = Attrs::new(name, Kind::Test);
        if reports {
            // The test's reports directory: an ordinary output directory (cached, uploaded,
            // restored like any), named to the test by Bazel's variables. The executor makes
            // the values absolute; the key holds them relative to the package.
            let dir = test_reports_dir(name);
            for var in TEST_REPORT_VARS {
                if env.entries.iter().any(|(k, _)| k == var) {
                    bail!("`{var}` in `env` of test `{name}`: cairn sets it (`reports = True`)");
                }
            }
            a.out_dirs = vec![dir.clone()];
            a.env.push(("TEST_OUTPUTS_DIR".to_string(), dir.clone()));
            a.env
                .push(("XML_OUTPUT_FILE".to_string(), format!("{dir}/{TEST_XML}")));
        }
        a.cmd = cmd.to_string();
        a.srcs = srcs.items;
        a.deps = deps.items;
        a.env.extend(env.entries);
        a.tools = tools.items;
        a.timeout = timeout.to_string();
        a.flaky = flaky;
        a.tags = tags.items;
        a.pass_env = pass_env.items;
        a.platform = platform.entries;
        declare(eval, a)
    }
}

/// The variables a test with `reports = True` gets, Bazel's names: its reports directory and
/// the JUnit file in it.
pub(crate) const TEST_REPORT_VARS: [&str; 2] = ["TEST_OUTPUTS_DIR", "XML_OUTPUT_FILE"];
/// The JUnit file's name in a test's reports directory.
pub(crate) const TEST_XML: &str = "test.xml";

/// A test's reports directory, relative to its package: `.cairn-test/<name>`.
pub(crate) fn test_reports_dir(name: &str) -> String {
    format!(".cairn-test/{name}")
}

/// The platform `fixed_output(digests = …)` picks for: `<os>-<arch>`, as Rust names them
/// (`linux-x86_64`, `linux-aarch64`, `macos-aarch64`).
pub(crate) fn host_platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("10m").unwrap(), 600_000);
        assert_eq!(parse_timeout("30s").unwrap(), 30_000);
        assert_eq!(parse_timeout("500ms").unwrap(), 500);
        assert_eq!(parse_timeout("2h").unwrap(), 7_200_000);
        assert_eq!(parse_timeout("5").unwrap(), 5_000);
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("0s").is_err());
    }
}

/// Property tests (issue 15): `glob()` over a package's file list matches what a reference
/// matcher for `*`, `?`, `**` and literal names says (include minus exclude, in file order),
/// records exactly what it returned, and refuses patterns that leave the package.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use starlark::environment::{Globals, Module};
    use starlark::syntax::{AstModule, Dialect};
    use starlark::values::list::{AllocList, ListRef};

    const PACKAGE: &str = "pkg";

    /// `glob(include, exclude = exclude)` evaluated in a package owning `files`: the list it
    /// returned and what it recorded, or the error.
    fn glob(
        globals: &Globals,
        files: &[String],
        include: &[String],
        exclude: &[String],
    ) -> Result<(Vec<String>, Vec<WorkspacePath>), String> {
        let ctx = PackageContext::new(
            PACKAGE.to_string(),
            Arc::new(files.to_vec()),
            Arc::new(Vec::new()),
        );
        let returned = Module::with_temp_heap(|module| {
            let heap = module.heap();
            let list = |items: &[String]| heap.alloc(AllocList(items.iter().map(String::as_str)));
            module.set("include", list(include));
            module.set("exclude", list(exclude));
            let ast = AstModule::parse(
                "BUILD.star",
                "glob(include, exclude = exclude)".to_string(),
                &Dialect::Extended,
            )
            .map_err(|e| e.to_string())?;
            let mut eval = Evaluator::new(&module);
            eval.extra = Some(&ctx);
            let value = eval.eval_module(ast, globals).map_err(|e| e.to_string())?;
            let list = ListRef::from_value(value).ok_or("glob() returned no list")?;
            Ok::<_, String>(
                list.iter()
                    .map(|v| v.unpack_str().unwrap_or_default().to_string())
                    .collect(),
            )
        })?;
        let mut recorded: Vec<WorkspacePath> = ctx.globbed.into_inner().into_iter().collect();
        recorded.sort();
        Ok((returned, recorded))
    }

    /// The reference: `pattern`'s components against `path`'s; `**` alone is any number of
    /// components (at least one at the end: `a/**` is what is inside `a`).
    fn matches(pattern: &[&str], path: &[&str]) -> bool {
        match pattern.split_first() {
            None => path.is_empty(),
            Some((&"**", [])) => !path.is_empty(),
            Some((&"**", rest)) => (0..=path.len()).any(|skip| matches(rest, &path[skip..])),
            Some((first, rest)) => {
                !path.is_empty()
                    && component_matches(first.as_bytes(), path[0].as_bytes())
                    && matches(rest, &path[1..])
            }
        }
    }

    fn component_matches(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => {
                (0..=name.len()).any(|skip| component_matches(rest, &name[skip..]))
            }
            Some((b'?', rest)) => !name.is_empty() && component_matches(rest, &name[1..]),
            Some((c, rest)) => name.first() == Some(c) && component_matches(rest, &name[1..]),
        }
    }

    fn any_matches(patterns: &[String], file: &str) -> bool {
        let path: Vec<&str> = file.split('/').collect();
        patterns
            .iter()
            .any(|p| matches(&p.split('/').collect::<Vec<_>>(), &path))
    }

    /// Files as a scan lists them: package-relative, sorted, unique.
    fn files() -> impl Strategy<Value = Vec<String>> {
        let name = prop::sample::select(vec!["a", "b", "ab", "a.rs", "b.rs", ".hidden", "x.txt"]);
        proptest::collection::btree_set(
            proptest::collection::vec(name, 1..4).prop_map(|p| p.join("/")),
            0..16,
        )
        .prop_map(|set| set.into_iter().collect())
    }

    fn pattern() -> impl Strategy<Value = String> {
        let part = prop::sample::select(vec![
            "a", "b", "a.rs", "*", "**", "?", "*.rs", "a*", "*b*", ".hidden", "?.rs", "x.*",
        ]);
        proptest::collection::vec(part, 1..4).prop_map(|p| p.join("/"))
    }

    /// A pattern that must be refused: it leaves the package.
    fn escaping() -> impl Strategy<Value = String> {
        prop_oneof![
            pattern().prop_map(|p| format!("/{p}")),
            pattern().prop_map(|p| format!("../{p}")),
            pattern().prop_map(|p| format!("{p}/../..")),
        ]
    }

    fn globals() -> Globals {
        GlobalsBuilder::standard().with(register_builtins).build()
    }

    proptest! {
        #[test]
        fn glob_matches_the_reference_and_honours_excludes(
            files in files(),
            include in proptest::collection::vec(pattern(), 1..4),
            exclude in proptest::collection::vec(pattern(), 0..3),
        ) {
            let (returned, recorded) = glob(&globals(), &files, &include, &exclude).unwrap();
            let expected: Vec<String> = files
                .iter()
                .filter(|f| any_matches(&include, f) && !any_matches(&exclude, f))
                .cloned()
                .collect();
            prop_assert_eq!(&returned, &expected);
            let expected: Vec<WorkspacePath> = expected
                .iter()
                .map(|f| WorkspacePath::in_package(PACKAGE, f).unwrap())
                .collect();
            prop_assert_eq!(recorded, expected);
        }

        #[test]
        fn patterns_leaving_the_package_are_refused(
            files in files(),
            bad in escaping(),
            others in proptest::collection::vec(pattern(), 0..2),
            in_exclude in any::<bool>(),
        ) {
            let mut patterns = others.clone();
            patterns.push(bad);
            let (include, exclude) = if in_exclude {
                (others, patterns)
            } else {
                (patterns, others)
            };
            let err = glob(&globals(), &files, &include, &exclude).unwrap_err();
            prop_assert!(err.contains("stay inside it"), "{err}");
        }

        #[test]
        fn any_pattern_globs_or_is_refused(
            files in files(),
            include in proptest::collection::vec(any::<String>(), 0..3),
            exclude in proptest::collection::vec("[a-c*?/\\[\\]{},.!\\\\-]{0,8}", 0..3),
        ) {
            if let Ok((returned, recorded)) = glob(&globals(), &files, &include, &exclude) {
                prop_assert!(returned.iter().all(|f| files.contains(f)));
                prop_assert_eq!(recorded.len(), returned.len());
            }
        }
    }
}
