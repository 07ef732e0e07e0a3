//! The repository catalog: the repositories a user works across, by name, with their kind (Rust,
//! Python, Node, Go) and tags. Kept as TOML beside the user's configuration (`repos.toml`), written
//! by `repos add|scan|remove` and editable by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mahavishnu_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The catalog file's name, beside the user's `config.toml`.
pub const FILE: &str = "repos.toml";

const HEADER: &str = "# The repositories Mahavishnu works across: `mahavishnu repos add|scan|remove` write this file,\n\
# and you may edit it. Each entry: path, kind (rust, python, node, go, other) and tags.\n\n";

/// What a repository is built with, as far as its checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `Cargo.toml`.
    Rust,
    /// `pyproject.toml`, `setup.py`, `setup.cfg` or `requirements.txt`.
    Python,
    /// `package.json`.
    Node,
    /// `go.mod`.
    Go,
    /// None of those.
    Other,
}

impl Kind {
    /// The kind of the repository at `dir`, from the files at its top.
    pub fn detect(dir: &Path) -> Kind {
        let has = |file: &str| dir.join(file).is_file();
        if has("Cargo.toml") {
            Kind::Rust
        } else if has("go.mod") {
            Kind::Go
        } else if has("package.json") {
            Kind::Node
        } else if [
            "pyproject.toml",
            "setup.py",
            "setup.cfg",
            "requirements.txt",
        ]
        .iter()
        .any(|file| has(file))
        {
            Kind::Python
        } else {
            Kind::Other
        }
    }

    /// Its name, as written in the catalog.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rust => "rust",
            Kind::Python => "python",
            Kind::Node => "node",
            Kind::Go => "go",
            Kind::Other => "other",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Kind> {
        match text {
            "rust" => Ok(Kind::Rust),
            "python" => Ok(Kind::Python),
            "node" => Ok(Kind::Node),
            "go" => Ok(Kind::Go),
            "other" => Ok(Kind::Other),
            _ => Err(Error::Invalid(format!(
                "unknown kind `{text}`; the kinds are rust, python, node, go and other"
            ))),
        }
    }
}

/// One repository of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Where it is (absolute).
    pub path: PathBuf,
    /// What it is built with.
    pub kind: Kind,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A repository as listed: its name, its entry, and whether it is still a git repository.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Repo {
    /// Its name in the catalog.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// What it is built with.
    pub kind: Kind,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether its directory is (still) a git repository.
    pub present: bool,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    repos: BTreeMap<String, Entry>,
}

/// The catalog, as read from its file.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    path: PathBuf,
    repos: BTreeMap<String, Entry>,
}

/// Whether `dir` is the top of a git work tree (a `.git` directory, or a `.git` file of a worktree).
pub fn is_git_repository(dir: &Path) -> bool {
    dir.join(".git").exists()
}

impl Catalog {
    /// The catalog beside the user's configuration file.
    pub fn default_path() -> Result<PathBuf> {
        let config = mahavishnu_core::paths::user_config_file().ok_or_else(|| {
            Error::Config(
                "no configuration directory: set HOME, XDG_CONFIG_HOME or MAHAVISHNU_CONFIG".into(),
            )
        })?;
        Ok(config.with_file_name(FILE))
    }

    /// Reads the catalog at `path`; a missing file is an empty catalog.
    pub fn load(path: &Path) -> Result<Catalog> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let file: File = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {}; fix the file by hand, or remove the entry with `mahavishnu repos remove`",
                path.display(),
                e.message()
            ))
        })?;
        // A name becomes a file name (each repository's output): nothing but a plain name will do.
        if let Some(bad) = file
            .repos
            .keys()
            .find(|name| slug(name) != **name || name.starts_with('.'))
        {
            return Err(Error::Config(format!(
                "{}: the repository name `{bad}` is not allowed; use lowercase letters, digits, `-`, `_` \
                 and `.` (not first)",
                path.display()
            )));
        }
        Ok(Catalog {
            path: path.to_path_buf(),
            repos: file.repos,
        })
    }

    /// Writes the catalog back (to a new file, then renamed over the old one).
    pub fn save(&self) -> Result<()> {
        let file = File {
            repos: self.repos.clone(),
        };
        let body = toml::to_string(&file)
            .map_err(|e| Error::Config(format!("cannot write the catalog: {e}")))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let partial = self.path.with_extension("toml.partial");
        std::fs::write(&partial, format!("{HEADER}{body}"))
            .map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
        std::fs::rename(&partial, &self.path)
            .map_err(|e| Error::io(format!("cannot write {}", self.path.display()), e))
    }

    /// Where the catalog is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many repositories it holds.
    pub fn len(&self) -> usize {
        self.repos.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }

    /// Adds the git repository at `dir` (or gives an entry already there the `tags`); returns its
    /// name and whether it was new.
    pub fn add(&mut self, dir: &Path, tags: &[String]) -> Result<(String, bool)> {
        for tag in tags {
            check_tag(tag)?;
        }
        let path = std::fs::canonicalize(dir).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; give the path of a git repository",
                dir.display()
            ))
        })?;
        if !is_git_repository(&path) {
            return Err(Error::Invalid(format!(
                "{} is not a git repository (no .git at its top); give the top of a git work tree, \
                 or use `repos scan` to find the repositories under a directory",
                path.display()
            )));
        }
        if let Some((name, entry)) = self.repos.iter_mut().find(|(_, e)| e.path == path) {
            for tag in tags {
                if !entry.tags.contains(tag) {
                    entry.tags.push(tag.clone());
                }
            }
            return Ok((name.clone(), false));
        }
        let name = self.free_name(&path);
        self.repos.insert(
            name.clone(),
            Entry {
                kind: Kind::detect(&path),
                path,
                tags: tags.to_vec(),
            },
        );
        Ok((name, true))
    }

    /// A name for the repository at `path` that no other entry has: its directory's name, else its
    /// parent's and its own, else that with a number.
    fn free_name(&self, path: &Path) -> String {
        let own = slug(
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
                .as_ref(),
        );
        let own = if own.is_empty() {
            "repo".to_string()
        } else {
            own
        };
        if !self.repos.contains_key(&own) {
            return own;
        }
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| slug(&n.to_string_lossy()))
            .unwrap_or_default();
        let longer = if parent.is_empty() {
            own.clone()
        } else {
            format!("{parent}-{own}")
        };
        if !self.repos.contains_key(&longer) {
            return longer;
        }
        (2..)
            .map(|n| format!("{longer}-{n}"))
            .find(|name| !self.repos.contains_key(name))
            .unwrap_or(longer)
    }

    /// Removes repositories by name or path; returns the names removed. An unknown one is an error
    /// naming what the catalog holds, and removes nothing.
    pub fn remove(&mut self, which: &[String]) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for wanted in which {
            names.push(self.resolve(wanted)?);
        }
        for name in &names {
            self.repos.remove(name);
        }
        Ok(names)
    }

    /// The name of the repository `wanted` names: a name, or a path.
    pub fn resolve(&self, wanted: &str) -> Result<String> {
        if self.repos.contains_key(wanted) {
            return Ok(wanted.to_string());
        }
        let path = std::fs::canonicalize(wanted).ok();
        if let Some(name) = path.and_then(|path| {
            self.repos
                .iter()
                .find(|(_, e)| e.path == path)
                .map(|(name, _)| name.clone())
        }) {
            return Ok(name);
        }
        let known: Vec<&str> = self.repos.keys().map(String::as_str).take(20).collect();
        Err(Error::Invalid(format!(
            "no repository `{wanted}` in the catalog ({}); {}",
            self.path.display(),
            if known.is_empty() {
                "it is empty: add repositories with `mahavishnu repos add PATH` or `repos scan DIR`"
                    .to_string()
            } else {
                format!(
                    "it has {}{}",
                    known.join(", "),
                    if self.repos.len() > 20 { ", ..." } else { "" }
                )
            }
        )))
    }

    /// The repositories with `tag` (all when `None`) and of `kind` (all when `None`), by name.
    pub fn list(&self, tag: Option<&str>, kind: Option<Kind>) -> Vec<Repo> {
        self.repos
            .iter()
            .filter(|(_, e)| tag.is_none_or(|tag| e.tags.iter().any(|t| t == tag)))
            .filter(|(_, e)| kind.is_none_or(|kind| e.kind == kind))
            .map(|(name, e)| Repo {
                name: name.clone(),
                present: is_git_repository(&e.path),
                path: e.path.clone(),
                kind: e.kind,
                tags: e.tags.clone(),
            })
            .collect()
    }

    /// The repositories a sweep runs over: those named (by name or path), else those with `tag`,
    /// else all. Naming none that exist, or a tag none has, is an error that says so.
    pub fn select(&self, names: &[String], tag: Option<&str>) -> Result<Vec<Repo>> {
        if !names.is_empty() {
            let mut wanted = Vec::new();
            for name in names {
                wanted.push(self.resolve(name)?);
            }
            return Ok(self
                .list(None, None)
                .into_iter()
                .filter(|repo| wanted.contains(&repo.name))
                .collect());
        }
        let repos = self.list(tag, None);
        if repos.is_empty() {
            return Err(Error::Invalid(match tag {
                Some(tag) => format!(
                    "no repository in the catalog has the tag `{tag}`; tag some with `mahavishnu repos add PATH --tag {tag}`"
                ),
                None => "the catalog is empty: add repositories with `mahavishnu repos add PATH` or `repos scan DIR`".into(),
            }));
        }
        Ok(repos)
    }
}

/// The git repositories under `dir`, at most `depth` levels down (a repository's own directories are
/// not searched further; hidden directories and `node_modules`, `target` are skipped).
pub fn scan(dir: &Path, depth: usize) -> Result<Vec<PathBuf>> {
    let top = std::fs::canonicalize(dir)
        .map_err(|e| Error::Invalid(format!("{}: {e}; give a directory to scan", dir.display())))?;
    if !top.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            top.display()
        )));
    }
    let mut found = Vec::new();
    let mut queue = vec![(top, 0usize)];
    while let Some((dir, level)) = queue.pop() {
        if is_git_repository(&dir) {
            found.push(dir);
            continue;
        }
        if level >= depth {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "node_modules" || name == "target" {
                continue;
            }
            // Not through symbolic links: a link loop, or a link out of the tree, is not followed.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push((entry.path(), level + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A name made of lowercase letters, digits, `-`, `_` and `.`.
pub fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the tag `{tag}` is not allowed: use letters, digits, `-`, `_` and `.` (at most 64)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_dir(root: &Path, name: &str, marker: Option<&str>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        if let Some(marker) = marker {
            std::fs::write(dir.join(marker), "").unwrap();
        }
        dir
    }

    #[test]
    fn kinds_names_and_tags_survive_a_round_trip_through_the_file() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("repos.toml");
        let mut catalog = Catalog::load(&file).unwrap();
        assert!(catalog.is_empty());
        let a = git_dir(root.path(), "a/app", Some("Cargo.toml"));
        let b = git_dir(root.path(), "b/app", Some("package.json"));
        let c = git_dir(root.path(), "c/App Three", Some("pyproject.toml"));
        let d = git_dir(root.path(), "d", Some("go.mod"));
        assert_eq!(
            catalog.add(&a, &["web".into()]).unwrap(),
            ("app".into(), true)
        );
        assert_eq!(catalog.add(&b, &[]).unwrap(), ("b-app".into(), true));
        assert_eq!(catalog.add(&c, &[]).unwrap().0, "app-three");
        catalog.add(&d, &[]).unwrap();
        // Adding again only adds tags.
        assert_eq!(
            catalog.add(&a, &["lib".into()]).unwrap(),
            ("app".into(), false)
        );
        catalog.save().unwrap();
        let again = Catalog::load(&file).unwrap();
        let listed = again.list(None, None);
        let kinds: Vec<(&str, Kind)> = listed.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("app", Kind::Rust),
                ("app-three", Kind::Python),
                ("b-app", Kind::Node),
                ("d", Kind::Go)
            ]
        );
        assert_eq!(listed[0].tags, ["web", "lib"]);
        assert_eq!(again.list(Some("lib"), None).len(), 1);
        assert_eq!(again.list(None, Some(Kind::Go))[0].name, "d");
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .starts_with("# The repositories")
        );
    }

    #[test]
    fn what_is_not_a_repository_or_not_in_the_catalog_is_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let mut catalog = Catalog::load(&root.path().join("repos.toml")).unwrap();
        let plain = root.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let error = catalog.add(&plain, &[]).unwrap_err().to_string();
        assert!(
            error.contains("not a git repository") && error.contains("repos scan"),
            "{error}"
        );
        let error = catalog.remove(&["nothing".into()]).unwrap_err().to_string();
        assert!(error.contains("it is empty"), "{error}");
        let error = catalog.add(&git_dir(root.path(), "x", None), &["no spaces".into()]);
        assert!(error.unwrap_err().to_string().contains("not allowed"));
        let error = catalog.select(&[], Some("web")).unwrap_err().to_string();
        assert!(error.contains("--tag web"), "{error}");
    }

    #[test]
    fn a_name_that_is_not_a_plain_name_is_refused_when_the_file_is_read() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("repos.toml");
        std::fs::write(
            &file,
            "[repos.\"../../etc\"]\npath = \"/tmp\"\nkind = \"other\"\n",
        )
        .unwrap();
        let error = Catalog::load(&file).unwrap_err().to_string();
        assert!(error.contains("`../../etc` is not allowed"), "{error}");
    }

    #[test]
    fn a_scan_finds_repositories_but_not_inside_them_nor_in_hidden_or_vendored_directories() {
        let root = tempfile::tempdir().unwrap();
        git_dir(root.path(), "one", None);
        git_dir(root.path(), "one/vendored", None);
        git_dir(root.path(), "group/two", None);
        git_dir(root.path(), ".hidden/three", None);
        git_dir(root.path(), "node_modules/four", None);
        git_dir(root.path(), "a/b/c/too-deep", None);
        let found = scan(root.path(), 3).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.strip_prefix(std::fs::canonicalize(root.path()).unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["group/two", "one"]);
    }
}
