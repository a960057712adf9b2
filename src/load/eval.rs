//! Evaluates BUILD.star files into targets. `.star` files reached by `load("//x/y.star", ...)`
//! are evaluated once per load and shared; load cycles are reported with their chain. BUILD
//! files may not `def` (macros live in `.star` files, as in Buck2).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};

use cairn_store::{Digest, FileStates};

use super::builtins::{PackageContext, register_builtins};
use super::cache::{AnalysisCache, PackageEntry, files_digest};
use super::prelude::PRELUDE;
use super::{BUILD_FILE, Diagnostic, LoadError, Scan};
use crate::graph::Target;
use crate::workspace::WorkspacePath;

/// Everything loading produced.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub targets: Vec<Target>,
    /// Package → the source paths that came from its `glob()` calls, sorted.
    pub globbed: rustc_hash::FxHashMap<String, Vec<WorkspacePath>>,
    /// How many packages there are, and how many were evaluated (not from the cache).
    pub packages: usize,
    /// The packages whose BUILD.star was evaluated (not taken from the cache).
    pub evaluated: Vec<String>,
    /// Package → the `.star` files its evaluation loaded (transitively).
    pub loads: BTreeMap<String, Vec<String>>,
    /// When the cache was not kept and something was evaluated: the encoded new cache.
    pub encoded_cache: Option<Vec<u8>>,
    /// What the packages' `host_tools()` calls asked: tool name → whether it was found.
    pub probes: BTreeMap<String, bool>,
}

fn build_dialect() -> Dialect {
    Dialect {
        enable_def: false,
        enable_lambda: false,
        enable_load: true,
        ..Dialect::Extended
    }
}

fn star_dialect() -> Dialect {
    Dialect {
        enable_load: true,
        ..Dialect::Extended
    }
}

fn globals() -> Globals {
    GlobalsBuilder::extended_by(&[
        LibraryExtension::StructType,
        LibraryExtension::Print,
        LibraryExtension::Json,
        LibraryExtension::Map,
        LibraryExtension::Filter,
        LibraryExtension::Debug,
    ])
    .with(register_builtins)
    .build()
}

fn diagnostic(err: starlark::Error) -> LoadError {
    LoadError::Diagnostic(Box::new(Diagnostic::from_starlark(&err)))
}

/// Resolves `load()` statements against workspace files.
struct StarLoader<'a> {
    root: &'a Path,
    globals: Globals,
    prelude: Vec<FrozenModule>,
    /// Evaluated `.star` modules and the files each one (transitively) loaded, itself included.
    cache: RefCell<HashMap<String, (FrozenModule, BTreeSet<String>)>>,
    /// The chain of `.star` files being evaluated, to report load cycles.
    in_progress: RefCell<Vec<String>>,
    /// One set per evaluation under way: the `.star` files it has loaded so far.
    touched: RefCell<Vec<BTreeSet<String>>>,
    /// The digest of each `.star` file's bytes as evaluated.
    digests: RefCell<BTreeMap<String, Digest>>,
}

impl StarLoader<'_> {
    fn evaluate(
        &self,
        name: &str,
        source: String,
        dialect: &Dialect,
        ctx: Option<&PackageContext>,
    ) -> starlark::Result<Option<FrozenModule>> {
        let ast = AstModule::parse(name, source, dialect)?;
        Module::with_temp_heap(|module| {
            for p in &self.prelude {
                module.import_public_symbols(p);
            }
            {
                let mut eval = Evaluator::new(&module);
                eval.set_loader(self);
                if let Some(ctx) = ctx {
                    eval.extra = Some(ctx);
                }
                eval.eval_module(ast, &self.globals)?;
            }
            if ctx.is_some() {
                // A BUILD file's module is not needed after evaluation.
                return Ok(None);
            }
            module
                .freeze()
                .map(Some)
                .map_err(|e| starlark::Error::new_other(anyhow::anyhow!("{e:?}")))
        })
    }
}

impl StarLoader<'_> {
    /// Records that the evaluation under way depends on `files`.
    fn touch(&self, files: &BTreeSet<String>) {
        if let Some(top) = self.touched.borrow_mut().last_mut() {
            top.extend(files.iter().cloned());
        }
    }
}

impl FileLoader for StarLoader<'_> {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        let other = |msg: String| starlark::Error::new_other(anyhow::anyhow!(msg));
        let Some(rel) = path.strip_prefix("//") else {
            return Err(other(format!(
                "Cannot load `{path}`: load paths are workspace paths written `//dir/file.star`"
            )));
        };
        let ws_path = WorkspacePath::in_package("", rel)
            .map_err(|e| other(format!("Cannot load `{path}`: {e}")))?;
        if !rel.ends_with(".star") || rel.ends_with(BUILD_FILE) {
            return Err(other(format!(
                "Cannot load `{path}`: only `.star` files other than BUILD.star can be loaded"
            )));
        }
        let key = ws_path.as_str().to_string();
        if let Some((m, closure)) = self.cache.borrow().get(&key) {
            self.touch(closure);
            return Ok(m.clone());
        }
        if self.in_progress.borrow().contains(&key) {
            let mut chain = self.in_progress.borrow().clone();
            chain.push(key);
            return Err(other(format!("load cycle: {}", chain.join(" -> "))));
        }
        let host = ws_path.to_host(self.root);
        let source = std::fs::read_to_string(&host).map_err(|e| {
            other(format!(
                "Cannot load `{path}`: {e} (looked for `{}`)",
                host.display()
            ))
        })?;
        self.digests
            .borrow_mut()
            .insert(key.clone(), Digest::of_bytes(source.as_bytes()));
        self.in_progress.borrow_mut().push(key.clone());
        self.touched.borrow_mut().push(BTreeSet::new());
        let result = self.evaluate(&format!("//{key}"), source, &star_dialect(), None);
        let mut closure = self.touched.borrow_mut().pop().unwrap_or_default();
        self.in_progress.borrow_mut().pop();
        closure.insert(key.clone());
        self.touch(&closure);
        match result {
            Ok(Some(module)) => {
                self.cache
                    .borrow_mut()
                    .insert(key, (module.clone(), closure));
                Ok(module)
            }
            Ok(None) => unreachable!("a loaded module is always frozen"),
            // The importing file only shows its `load` line: put the inner location in the text.
            Err(e) => Err(other(format!(
                "In `{path}`: {}",
                Diagnostic::from_starlark(&e)
            ))),
        }
    }
}

fn evaluate_prelude(globals: &Globals) -> Result<Vec<FrozenModule>, LoadError> {
    let mut modules: Vec<FrozenModule> = Vec::new();
    for (name, source) in PRELUDE {
        let ast =
            AstModule::parse(name, source.to_string(), &star_dialect()).map_err(diagnostic)?;
        let frozen = Module::with_temp_heap(|module| -> starlark::Result<FrozenModule> {
            for p in &modules {
                module.import_public_symbols(p);
            }
            Evaluator::new(&module).eval_module(ast, globals)?;
            module
                .freeze()
                .map_err(|e| starlark::Error::new_other(anyhow::anyhow!("{e:?}")))
        })
        .map_err(diagnostic)?;
        modules.push(frozen);
    }
    Ok(modules)
}

/// Evaluates the packages found by the scan, reusing the analysis cache's entry of every
/// package whose inputs are unchanged. With `keep`, updates the cache in memory (watch mode);
/// otherwise moves the targets out of it, returning the encoded new cache if it changed.
pub(crate) fn load_workspace(
    root: &Path,
    scan: &Scan,
    states: &FileStates,
    cache: &mut AnalysisCache,
    keep: bool,
    tool_path: &[std::path::PathBuf],
) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    let tool_path = Arc::new(tool_path.to_vec());
    // Built on first need: a fully cached load never starts Starlark. Shared by all packages,
    // so each `.star` file is evaluated once per build.
    let mut loader: Option<StarLoader> = None;
    let mut star_digests: HashMap<String, Option<String>> = HashMap::new();
    let mut current_digest = |rel: &str| -> Option<String> {
        star_digests
            .entry(rel.to_string())
            .or_insert_with(|| {
                states
                    .file_info(&root.join(rel))
                    .ok()
                    .map(|(info, _)| info.digest.hex())
            })
            .clone()
    };
    let mut entries: BTreeMap<String, PackageEntry> = BTreeMap::new();
    for (package, files) in &scan.packages {
        let build = if package.is_empty() {
            BUILD_FILE.to_string()
        } else {
            format!("{package}/{BUILD_FILE}")
        };
        let host = root.join(&build);
        let files_digest = files_digest(files);
        let build_digest = current_digest(&build);
        let reusable = cache.packages.remove(package).filter(|e| {
            Some(&e.build) == build_digest.as_ref()
                && e.files == files_digest
                && e.loads
                    .iter()
                    .all(|(f, d)| current_digest(f).as_ref() == Some(d))
                && probes_hold(&tool_path, &e.probes)
        });
        let entry = match reusable {
            Some(entry) => entry,
            None => {
                let source = std::fs::read_to_string(&host).map_err(|source| LoadError::Io {
                    path: host.clone(),
                    source,
                })?;
                let build_digest = Digest::of_bytes(source.as_bytes()).hex();
                if loader.is_none() {
                    let globals = globals();
                    let prelude = evaluate_prelude(&globals)?;
                    loader = Some(StarLoader {
                        root,
                        globals,
                        prelude,
                        cache: RefCell::default(),
                        in_progress: RefCell::default(),
                        touched: RefCell::default(),
                        digests: RefCell::default(),
                    });
                }
                let loader = loader.as_ref().expect("initialised above");
                let entry = evaluate_package(loader, package, files, &build, source, &tool_path)?;
                loaded.evaluated.push(package.clone());
                PackageEntry {
                    build: build_digest,
                    files: files_digest,
                    ..entry
                }
            }
        };
        loaded
            .probes
            .extend(entry.probes.iter().map(|(k, v)| (k.clone(), *v)));
        entries.insert(package.clone(), entry);
    }
    loaded.packages = entries.len();
    if keep {
        for (package, entry) in &entries {
            loaded
                .loads
                .insert(package.clone(), entry.loads.keys().cloned().collect());
            loaded
                .globbed
                .insert(package.clone(), entry.globbed.clone());
            loaded.targets.extend(entry.targets.iter().cloned());
        }
        cache.packages = entries;
        return Ok(loaded);
    }
    if !loaded.evaluated.is_empty() {
        cache.packages = entries;
        loaded.encoded_cache = Some(cache.encode());
        entries = std::mem::take(&mut cache.packages);
    }
    for (package, entry) in entries {
        loaded
            .loads
            .insert(package.clone(), entry.loads.into_keys().collect());
        loaded.globbed.insert(package, entry.globbed);
        loaded.targets.extend(entry.targets);
    }
    Ok(loaded)
}

/// The BUILD file being evaluated now, and since when: what the CLI's watchdog names when an
/// evaluation runs past its time or memory limit (Starlark cannot be interrupted).
static EVALUATING: std::sync::Mutex<Option<(String, std::time::Instant)>> =
    std::sync::Mutex::new(None);

fn lock_evaluating() -> std::sync::MutexGuard<'static, Option<(String, std::time::Instant)>> {
    EVALUATING.lock().unwrap_or_else(|p| p.into_inner())
}

/// The BUILD file being evaluated now (workspace-relative) and for how long.
pub(crate) fn evaluating() -> Option<(String, std::time::Duration)> {
    lock_evaluating()
        .as_ref()
        .map(|(file, since)| (file.clone(), since.elapsed()))
}

fn evaluate_package(
    loader: &StarLoader,
    package: &str,
    files: &[String],
    build: &str,
    source: String,
    tool_path: &Arc<Vec<std::path::PathBuf>>,
) -> Result<PackageEntry, LoadError> {
    let ctx = PackageContext::new(
        package.to_string(),
        Arc::new(files.to_vec()),
        tool_path.clone(),
    );
    loader.touched.borrow_mut().push(BTreeSet::new());
    *lock_evaluating() = Some((build.to_string(), std::time::Instant::now()));
    let result = loader.evaluate(&format!("//{build}"), source, &build_dialect(), Some(&ctx));
    *lock_evaluating() = None;
    let touched = loader.touched.borrow_mut().pop().unwrap_or_default();
    result.map_err(diagnostic)?;
    let digests = loader.digests.borrow();
    let loads = touched
        .into_iter()
        .filter_map(|f| digests.get(&f).map(|d| (f, d.hex())))
        .collect();
    let mut globbed: Vec<WorkspacePath> = ctx.globbed.into_inner().into_iter().collect();
    globbed.sort();
    let targets = ctx.targets.into_inner();
    let probes = ctx.probes.into_inner();
    Ok(PackageEntry {
        probes,
        build: String::new(),
        files: String::new(),
        loads,
        definitions: targets.iter().map(Target::definition_digest).collect(),
        targets,
        globbed,
    })
}

/// Whether every `host_tools()` answer still holds: each tool is (or is not) there as it was.
pub(crate) fn probes_hold(
    tool_path: &[std::path::PathBuf],
    probes: &BTreeMap<String, bool>,
) -> bool {
    probes
        .iter()
        .all(|(name, was)| crate::action::tools::find_tool(tool_path, name).is_some() == *was)
}
