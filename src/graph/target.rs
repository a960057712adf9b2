//! A target as declared in a BUILD file, after its attributes were checked and its paths
//! normalised.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Label;
use crate::workspace::WorkspacePath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Filegroup,
    Action,
    Test,
    Group,
    FixedOutput,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Filegroup => "filegroup",
            Kind::Action => "action",
            Kind::Test => "test",
            Kind::Group => "group",
            Kind::FixedOutput => "fixed_output",
        }
    }

    /// Whether targets of this kind run a command (and so appear in build summaries).
    pub fn runs(self) -> bool {
        matches!(self, Kind::Action | Kind::Test | Kind::FixedOutput)
    }
}

/// Where something was declared: a workspace-relative file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Prefixes the hashed definition; a new value invalidates stored digests (it enters the
/// analysis cache's fingerprint).
pub(crate) const DEFINITION_DOMAIN: &[u8] = b"cairn target definition v2\0";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    #[serde(with = "label_serde")]
    pub label: Label,
    pub kind: Kind,
    /// Source files, workspace-relative, sorted and deduplicated.
    pub srcs: Vec<WorkspacePath>,
    /// Dependencies (from `deps`, and labels written in `srcs`).
    #[serde(with = "labels_serde")]
    pub deps: Vec<Label>,
    pub cmd: String,
    pub outs: Vec<WorkspacePath>,
    pub out_dirs: Vec<WorkspacePath>,
    pub env: BTreeMap<String, String>,
    pub tools: Vec<String>,
    pub timeout_ms: u64,
    pub flaky: u32,
    pub tags: Vec<String>,
    /// Host environment variables passed through without entering the key.
    pub pass_env: Vec<String>,
    /// REAPI platform properties a worker must offer (`platform = {...}`), beside the host's
    /// OS family and ISA. They enter the key through the `Action`'s `Platform`.
    #[serde(default)]
    pub platform: BTreeMap<String, String>,
    /// The declared output digest of a `fixed_output`.
    #[serde(with = "digest_serde")]
    pub fixed_digest: Option<cairn_store::Digest>,
    pub location: Location,
    /// The digest of everything above, computed on first use (`definition_digest`) or taken
    /// from the analysis cache, which keeps it beside the target: a cached target is never
    /// serialized again to be fingerprinted. A target is not changed after it is loaded.
    #[serde(skip)]
    pub definition: OnceLock<[u8; 32]>,
}

impl Target {
    /// BLAKE3 of the serialized definition (every field but this digest).
    pub fn definition_digest(&self) -> [u8; 32] {
        *self.definition.get_or_init(|| {
            let mut h = blake3::Hasher::new();
            h.update(DEFINITION_DOMAIN);
            h.update(&postcard::to_stdvec(self).expect("a target serializes"));
            *h.finalize().as_bytes()
        })
    }

    /// Every declared output path (files and directories).
    pub fn outputs(&self) -> impl Iterator<Item = &WorkspacePath> {
        self.outs.iter().chain(&self.out_dirs)
    }
}

impl Serialize for WorkspacePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkspacePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Stored paths were normalised when written: checking is cheaper than normalising.
        let normal = !s.is_empty() && s.split('/').all(|part| !matches!(part, "" | "." | ".."));
        if !normal {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is not a normalised workspace path"
            )));
        }
        Ok(WorkspacePath::from_normalized(s))
    }
}

mod label_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(label: &Label, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&label.to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
        let s = String::deserialize(d)?;
        Label::parse(&s, "").map_err(serde::de::Error::custom)
    }
}

mod digest_serde {
    use super::*;
    use cairn_store::Digest;

    pub fn serialize<S: serde::Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format!("{}/{}", d.hex(), d.size)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let (hex, size) = text
            .split_once('/')
            .ok_or_else(|| serde::de::Error::custom("digest"))?;
        let mut digest: Digest = format!("blake3:{hex}")
            .parse()
            .map_err(serde::de::Error::custom)?;
        digest.size = size.parse().map_err(serde::de::Error::custom)?;
        Ok(Some(digest))
    }
}

mod labels_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(labels: &[Label], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(labels.iter().map(|l| l.to_string()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Label>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| Label::parse(s, "").map_err(serde::de::Error::custom))
            .collect()
    }
}
