//! Evaluates BUILD.star files into targets. `.star` files reached by `load("//x/y.star", ...)`
//! are evaluated once per load and shared; load cycles are reported with their chain. BUILD
//! files may not `def` (macros live in `.star` files, as in Buck2).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, LibraryExtension, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::syntax::{AstModule, Dialect};

use super::builtins::{PackageContext, register_builtins};
use super::prelude::PRELUDE;
use super::{BUILD_FILE, Diagnostic, LoadError, Scan};
use crate::graph::{Label, Location, Target};
use crate::workspace::WorkspacePath;

/// Everything loading produced.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub targets: Vec<Target>,
    /// Source paths that came from `glob()`.
    pub globbed: HashSet<WorkspacePath>,
    /// Explicit `srcs` that did not exist.
    pub missing_srcs: Vec<(Label, WorkspacePath, Location)>,
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
    globals: &'a Globals,
    prelude: &'a [FrozenModule],
    cache: RefCell<HashMap<String, FrozenModule>>,
    /// The chain of `.star` files being evaluated, to report load cycles.
    in_progress: RefCell<Vec<String>>,
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
            for p in self.prelude {
                module.import_public_symbols(p);
            }
            {
                let mut eval = Evaluator::new(&module);
                eval.set_loader(self);
                if let Some(ctx) = ctx {
                    eval.extra = Some(ctx);
                }
                eval.eval_module(ast, self.globals)?;
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
        if let Some(m) = self.cache.borrow().get(&key) {
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
        self.in_progress.borrow_mut().push(key.clone());
        let result = self.evaluate(&format!("//{key}"), source, &star_dialect(), None);
        self.in_progress.borrow_mut().pop();
        match result {
            Ok(Some(module)) => {
                self.cache.borrow_mut().insert(key, module.clone());
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

/// Evaluates every package found by the scan.
pub(crate) fn load_workspace(root: &Path, scan: &Scan) -> Result<Loaded, LoadError> {
    let globals = globals();
    let prelude = evaluate_prelude(&globals)?;
    let loader = StarLoader {
        root,
        globals: &globals,
        prelude: &prelude,
        cache: RefCell::default(),
        in_progress: RefCell::default(),
    };
    let mut loaded = Loaded::default();
    let mut by_package: BTreeMap<&String, Vec<Target>> = BTreeMap::new();
    for (package, files) in &scan.packages {
        let build = if package.is_empty() {
            BUILD_FILE.to_string()
        } else {
            format!("{package}/{BUILD_FILE}")
        };
        let host = root.join(&build);
        let source = std::fs::read_to_string(&host).map_err(|source| LoadError::Io {
            path: host.clone(),
            source,
        })?;
        let ctx = PackageContext::new(root.to_path_buf(), package.clone(), Arc::new(files.clone()));
        loader
            .evaluate(&format!("//{build}"), source, &build_dialect(), Some(&ctx))
            .map_err(diagnostic)?;
        loaded.globbed.extend(ctx.globbed.into_inner());
        loaded.missing_srcs.extend(ctx.missing_srcs.into_inner());
        by_package.insert(package, ctx.targets.into_inner());
    }
    loaded.targets = by_package.into_values().flatten().collect();
    Ok(loaded)
}
