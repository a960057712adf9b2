//! Labels (`//apps/web:build`) and patterns (`//...`, `//apps/...`, `//apps/web:all`,
//! `:name`): parsing relative to a package, and matching.

use std::fmt;

/// A target's name: the package (workspace-relative directory, `""` for the root) and the
/// target name within it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Label {
    pub package: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LabelError {
    #[error("Invalid label `{label}`: {why}")]
    Invalid { label: String, why: &'static str },
}

fn invalid(label: &str, why: &'static str) -> LabelError {
    LabelError::Invalid {
        label: label.to_string(),
        why,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+=,@~".contains(c))
}

fn valid_package(package: &str) -> bool {
    package.is_empty()
        || package
            .split('/')
            .all(|part| valid_name(part) && part != "...")
}

impl Label {
    /// The package as one path component for per-target files under the store (logs):
    /// `_root` for the workspace root's package.
    pub fn package_dir(&self) -> &str {
        if self.package.is_empty() {
            "_root"
        } else {
            &self.package
        }
    }

    /// Parses `//pkg:name`, `//pkg` (short for `//pkg:<last component of pkg>`) or `:name`
    /// (in `current_package`).
    pub fn parse(text: &str, current_package: &str) -> Result<Label, LabelError> {
        let (package, name) = if let Some(rest) = text.strip_prefix("//") {
            match rest.split_once(':') {
                Some((pkg, name)) => (pkg.to_string(), name.to_string()),
                None => {
                    let last = rest.rsplit('/').next().unwrap_or_default();
                    if last.is_empty() {
                        return Err(invalid(text, "`//` alone names no target; write `//:name`"));
                    }
                    (rest.to_string(), last.to_string())
                }
            }
        } else if let Some(name) = text.strip_prefix(':') {
            (current_package.to_string(), name.to_string())
        } else {
            return Err(invalid(text, "expected `//package:name` or `:name`"));
        };
        if package.ends_with('/') || !valid_package(&package) {
            return Err(invalid(
                text,
                "the package must be a `/`-separated path of names made of letters, digits and `_-.+=,@~`",
            ));
        }
        if !valid_name(&name) {
            return Err(invalid(
                text,
                "the target name must be letters, digits and `_-.+=,@~`",
            ));
        }
        Ok(Label { package, name })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A set of targets named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Every target in the package and all packages below it (`//apps/...`).
    Recursive(String),
    /// Every target in one package (`//apps/web:all`, `//apps/web:*`).
    Package(String),
    /// One target.
    Target(Label),
}

impl Pattern {
    /// Parses a pattern; forms without `//` are relative to `current_package` (the package of
    /// the directory cairn was started in).
    pub fn parse(text: &str, current_package: &str) -> Result<Pattern, LabelError> {
        let absolute = if text.starts_with("//") || text.starts_with(':') {
            text.to_string()
        } else if current_package.is_empty() {
            format!("//{text}")
        } else {
            format!("//{current_package}/{text}")
        };
        if let Some(rest) = absolute.strip_prefix("//") {
            if rest == "..." {
                return Ok(Pattern::Recursive(String::new()));
            }
            if let Some(pkg) = rest.strip_suffix("/...") {
                if !valid_package(pkg) {
                    return Err(invalid(text, "invalid package before `/...`"));
                }
                return Ok(Pattern::Recursive(pkg.to_string()));
            }
            if let Some((pkg, "all" | "*")) = rest.split_once(':') {
                if !valid_package(pkg) {
                    return Err(invalid(text, "invalid package before `:all`"));
                }
                return Ok(Pattern::Package(pkg.to_string()));
            }
        }
        if let Some(name) = absolute.strip_prefix(':')
            && (name == "all" || name == "*")
        {
            return Ok(Pattern::Package(current_package.to_string()));
        }
        Label::parse(&absolute, current_package).map(Pattern::Target)
    }

    pub fn matches(&self, label: &Label) -> bool {
        match self {
            Pattern::Recursive(pkg) => {
                pkg.is_empty()
                    || label.package == *pkg
                    || (label.package.starts_with(pkg.as_str())
                        && label.package.as_bytes().get(pkg.len()) == Some(&b'/'))
            }
            Pattern::Package(pkg) => label.package == *pkg,
            Pattern::Target(l) => l == label,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(p: &str, n: &str) -> Label {
        Label {
            package: p.into(),
            name: n.into(),
        }
    }

    #[test]
    fn parses_labels() {
        assert_eq!(
            Label::parse("//apps/web:build", "x").unwrap(),
            l("apps/web", "build")
        );
        assert_eq!(
            Label::parse(":build", "apps/web").unwrap(),
            l("apps/web", "build")
        );
        assert_eq!(
            Label::parse("//apps/web", "").unwrap(),
            l("apps/web", "web")
        );
        assert_eq!(Label::parse("//:ci", "").unwrap(), l("", "ci"));
        assert_eq!(l("apps/web", "build").to_string(), "//apps/web:build");
        for bad in [
            "build",
            "//apps/web:",
            "//apps/../x:y",
            "//a b:c",
            "//",
            "//apps/:x",
        ] {
            assert!(Label::parse(bad, "").is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn parses_and_matches_patterns() {
        let web = l("apps/web", "build");
        let webx = l("apps/webx", "build");
        let all = Pattern::parse("//...", "").unwrap();
        assert!(all.matches(&web));
        let apps = Pattern::parse("//apps/...", "").unwrap();
        assert!(apps.matches(&web) && !apps.matches(&l("packages/t", "x")));
        let webonly = Pattern::parse("//apps/web/...", "").unwrap();
        assert!(webonly.matches(&web) && !webonly.matches(&webx));
        let pkg = Pattern::parse("//apps/web:all", "").unwrap();
        assert!(pkg.matches(&web) && !pkg.matches(&l("apps/web/sub", "x")));
        assert_eq!(
            Pattern::parse(":build", "apps/web").unwrap(),
            Pattern::Target(web.clone())
        );
        assert_eq!(
            Pattern::parse("...", "apps").unwrap(),
            Pattern::Recursive("apps".into())
        );
        assert_eq!(
            Pattern::parse("web:build", "apps").unwrap(),
            Pattern::Target(web)
        );
    }
}

/// Property tests (issue 15): labels and patterns come from users, BUILD files and stored
/// records; parsing any text is a label or an error, and a printed label parses back to itself.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.+=,@~-]{1,8}"
            .prop_filter("`.` and `..` are not names", |n| n != "." && n != "..")
    }

    fn package() -> impl Strategy<Value = String> {
        proptest::collection::vec(name(), 0..4)
            .prop_map(|parts| parts.join("/"))
            .prop_filter("`...` is not a package name", |p| valid_package(p))
    }

    fn label() -> impl Strategy<Value = Label> {
        (package(), name()).prop_map(|(package, name)| Label { package, name })
    }

    /// Text that is often close to a label or pattern.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(//)?[a-c./:*-]{0,10}",
            "(//|:)?[a-c]{0,3}(/[a-c.]{0,3}){0,3}(:[a-c*.]{0,4}|/\\.\\.\\.)?",
        ]
    }

    /// The reference for `Pattern::Recursive`: the package is `pkg` or below it, component
    /// by component.
    fn below(package: &str, pkg: &str) -> bool {
        let parts: Vec<&str> = package.split('/').collect();
        let prefix: Vec<&str> = pkg.split('/').collect();
        pkg.is_empty() || parts.starts_with(&prefix)
    }

    proptest! {
        #[test]
        fn a_printed_label_parses_back_to_itself(label in label(), elsewhere in package()) {
            prop_assert_eq!(Label::parse(&label.to_string(), &elsewhere), Ok(label.clone()));
            let relative = format!(":{}", label.name);
            prop_assert_eq!(Label::parse(&relative, &label.package), Ok(label.clone()));
            let pattern = Pattern::parse(&label.to_string(), &elsewhere).unwrap();
            if label.name == "all" {
                prop_assert_eq!(pattern, Pattern::Package(label.package.clone()));
            } else {
                prop_assert_eq!(pattern, Pattern::Target(label.clone()));
            }
        }

        #[test]
        fn any_text_parses_to_a_valid_label_or_is_refused(text in text(), current in package()) {
            if let Ok(label) = Label::parse(&text, &current) {
                prop_assert!(valid_package(&label.package) && valid_name(&label.name), "{label}");
                prop_assert_eq!(Label::parse(&label.to_string(), ""), Ok(label));
            }
        }

        #[test]
        fn any_text_parses_as_a_pattern_or_is_refused(text in text(), current in package()) {
            match Pattern::parse(&text, &current) {
                Ok(Pattern::Recursive(pkg) | Pattern::Package(pkg)) => {
                    prop_assert!(valid_package(&pkg), "{pkg:?}");
                }
                Ok(Pattern::Target(label)) => {
                    prop_assert!(valid_package(&label.package) && valid_name(&label.name));
                }
                Err(_) => {}
            }
        }

        #[test]
        fn patterns_match_by_whole_components(pkg in package(), label in label()) {
            prop_assert_eq!(
                Pattern::Recursive(pkg.clone()).matches(&label),
                below(&label.package, &pkg)
            );
            prop_assert_eq!(Pattern::Package(pkg.clone()).matches(&label), label.package == pkg);
            if let Ok(p) = Pattern::parse(&format!("//{pkg}/..."), "") {
                prop_assert_eq!(p.matches(&label), below(&label.package, &pkg));
            }
            let all = Pattern::parse(&format!("//{pkg}:all"), "").unwrap();
            prop_assert_eq!(all.matches(&label), label.package == pkg);
        }
    }
}
