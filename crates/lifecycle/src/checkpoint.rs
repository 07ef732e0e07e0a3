//! Checkpoints: snapshots of a whole work tree (what `.gitignore` does not exclude) as commits on hidden
//! refs, `refs/mahavishnu/checkpoints/...`, made through a private index. HEAD, the branch and the
//! user's index never move, except when the user asks for an ordinary commit as well.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mahavishnu_core::{Error, Result, Timestamp};
use serde::Serialize;

const REF_PREFIX: &str = "refs/mahavishnu/checkpoints/";

/// One checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checkpoint {
    /// Short id (the commit's abbreviated hash), used by `diff` and `restore`.
    pub id: String,
    /// The full commit hash.
    pub commit: String,
    /// The hidden ref that keeps it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// Its message.
    pub message: String,
    /// The ordinary commit made on the branch as well, when asked for and there was something to commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_commit: Option<String>,
}

/// What a git command that may fail printed.
pub struct Attempt {
    /// Whether it exited 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
}

/// A git work tree.
#[derive(Clone, Debug)]
pub struct Repository {
    top: PathBuf,
    git_dir: PathBuf,
    /// No identity is configured: commits are made as "Mahavishnu".
    anonymous: bool,
}

impl Repository {
    /// The work tree around `dir`; a directory outside any gets a clear error.
    pub fn discover(dir: &Path) -> Result<Self> {
        let output = git(
            dir,
            &["rev-parse", "--show-toplevel", "--absolute-git-dir"],
            None,
            false,
        )?;
        if !output.status.success() {
            return Err(Error::Invalid(format!(
                "{} is not inside a git work tree; checkpoints need git: run `git init` there first",
                dir.display()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let (Some(top), Some(git_dir)) = (lines.next(), lines.next()) else {
            return Err(Error::Invalid(format!(
                "{} is a bare git repository; checkpoints need a work tree",
                dir.display()
            )));
        };
        // Checkpoints must work where no identity is configured; git's own settings win where there is one.
        let anonymous = !git(dir, &["var", "GIT_COMMITTER_IDENT"], None, false)?
            .status
            .success();
        Ok(Repository {
            top: PathBuf::from(top),
            git_dir: PathBuf::from(git_dir),
            anonymous,
        })
    }

    /// The top of the work tree.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// Runs git in the work tree (with a private index, when given) and returns its output.
    pub fn run(&self, args: &[&str], index: Option<&Path>) -> Result<String> {
        let output = git(&self.top, args, index, self.anonymous)?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string());
        }
        Err(Error::Invalid(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            self.top.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    /// Runs git and returns whether it succeeded and what it printed, for commands whose failure is an
    /// answer (a merge that conflicts).
    pub fn try_run(&self, args: &[&str]) -> Result<Attempt> {
        let output = git(&self.top, args, None, self.anonymous)?;
        Ok(Attempt {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    fn head(&self) -> Option<String> {
        self.run(&["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], None)
            .ok()
            .filter(|head| !head.is_empty())
    }

    /// Snapshots the work tree into a tree object through a private index seeded from the user's, so
    /// that only changed files are hashed again.
    pub fn snapshot_tree(&self) -> Result<String> {
        let index = PrivateIndex::new(&self.git_dir)?;
        let user_index = self.git_dir.join("index");
        if user_index.is_file() {
            std::fs::copy(&user_index, &index.path)
                .map_err(|e| Error::io(format!("cannot copy {}", user_index.display()), e))?;
        }
        self.run(&["add", "--all", "--", "."], Some(&index.path))?;
        self.run(&["write-tree"], Some(&index.path))
    }

    /// Makes a commit of `tree` (on `parent`), as the user, or as Mahavishnu where git knows no one.
    pub fn commit_tree(&self, tree: &str, parent: Option<&str>, message: &str) -> Result<String> {
        let mut args = vec!["commit-tree", tree, "-m", message];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        self.run(&args, None)
    }

    /// Takes a checkpoint; with `commit`, also commits the changes on the current branch (never on a
    /// detached HEAD, never an empty commit).
    pub fn checkpoint(&self, message: &str, commit: bool) -> Result<Checkpoint> {
        let tree = self.snapshot_tree()?;
        let head = self.head();
        let snapshot = self.commit_tree(&tree, head.as_deref(), message)?;
        let created_at = Timestamp::now();
        let short = &snapshot[..12.min(snapshot.len())];
        let reference = format!("{REF_PREFIX}{}-{short}", created_at.0);
        self.run(&["update-ref", &reference, &snapshot], None)?;
        let branch_commit = if commit {
            self.commit_on_branch(&tree, head.as_deref(), message)?
        } else {
            None
        };
        Ok(Checkpoint {
            id: short.to_string(),
            commit: snapshot.clone(),
            reference,
            created_at,
            message: message.to_string(),
            branch_commit,
        })
    }

    fn commit_on_branch(
        &self,
        tree: &str,
        head: Option<&str>,
        message: &str,
    ) -> Result<Option<String>> {
        let branch = self.run(&["symbolic-ref", "--quiet", "HEAD"], None).map_err(|_| {
            Error::Invalid("HEAD is detached: the checkpoint was taken, but no commit is made on a detached HEAD; check out a branch".into())
        })?;
        if let Some(head) = head
            && self.run(&["rev-parse", &format!("{head}^{{tree}}")], None)? == tree
        {
            return Ok(None); // nothing changed: no empty commit
        }
        let commit = self.commit_tree(tree, head, message)?;
        let old = head.unwrap_or("0000000000000000000000000000000000000000");
        self.run(
            &[
                "update-ref",
                "-m",
                "mahavishnu checkpoint --commit",
                &branch,
                &commit,
                old,
            ],
            None,
        )?;
        // The user's index follows the new commit, as after `git commit -a`; the work tree is untouched.
        self.run(&["reset", "--quiet", "--mixed"], None)?;
        Ok(Some(commit))
    }

    /// Every checkpoint, newest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let format = "%(refname)%09%(objectname)%09%(contents:subject)";
        let out = self.run(
            &[
                "for-each-ref",
                "--sort=-refname",
                &format!("--format={format}"),
                REF_PREFIX,
            ],
            None,
        )?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                let reference = fields.next()?.to_string();
                let commit = fields.next()?.to_string();
                let message = fields.next().unwrap_or_default().to_string();
                let stamp = reference
                    .strip_prefix(REF_PREFIX)?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some(Checkpoint {
                    id: commit[..12.min(commit.len())].to_string(),
                    commit,
                    reference,
                    created_at: Timestamp(stamp),
                    message,
                    branch_commit: None,
                })
            })
            .collect())
    }

    /// The checkpoint an id (or any unique prefix of its hash) names.
    pub fn find(&self, id: &str) -> Result<Checkpoint> {
        let matches: Vec<Checkpoint> = self
            .checkpoints()?
            .into_iter()
            .filter(|checkpoint| {
                !id.is_empty()
                    && (checkpoint.commit.starts_with(id) || checkpoint.reference.ends_with(id))
            })
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
            0 => Err(Error::Invalid(format!(
                "no checkpoint `{id}`; see `mahavishnu checkpoint list`"
            ))),
            _ => Err(Error::Invalid(format!(
                "`{id}` names several checkpoints; give more of the id"
            ))),
        }
    }

    /// What changed in the work tree since a checkpoint (a unified diff, or `--stat`).
    pub fn diff(&self, id: &str, stat: bool) -> Result<String> {
        let checkpoint = self.find(id)?;
        let now = self.snapshot_tree()?;
        let mut args = vec!["diff", "--no-color", "--no-ext-diff"];
        if stat {
            args.push("--stat");
        }
        args.push(&checkpoint.commit);
        args.push(&now);
        self.run(&args, None)
    }

    /// Writes a checkpoint's files back into the work tree, after a safety checkpoint of the current
    /// state; files added since the checkpoint are removed. HEAD, branch and index stay as they are.
    pub fn restore(&self, id: &str) -> Result<(Checkpoint, Checkpoint)> {
        let checkpoint = self.find(id)?;
        let safety = self.checkpoint(
            &format!("safety checkpoint before restoring {}", checkpoint.id),
            false,
        )?;
        let added = self.run(
            &[
                "diff",
                "--name-only",
                "-z",
                "--no-renames",
                "--diff-filter=A",
                &checkpoint.commit,
                &safety.commit,
            ],
            None,
        )?;
        for path in added.split('\0').filter(|path| !path.is_empty()) {
            let _ = std::fs::remove_file(self.top.join(path));
        }
        let index = PrivateIndex::new(&self.git_dir)?;
        self.run(&["read-tree", &checkpoint.commit], Some(&index.path))?;
        self.run(&["checkout-index", "--all", "--force"], Some(&index.path))?;
        Ok((checkpoint, safety))
    }
}

/// A temporary index file inside the git directory, removed when dropped.
struct PrivateIndex {
    path: PathBuf,
}

impl PrivateIndex {
    fn new(git_dir: &Path) -> Result<Self> {
        let dir = git_dir.join("mahavishnu");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(format!(
            "index-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        Ok(PrivateIndex { path })
    }
}

impl Drop for PrivateIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn git(dir: &Path, args: &[&str], index: Option<&Path>, anonymous: bool) -> Result<Output> {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    if anonymous {
        for role in ["AUTHOR", "COMMITTER"] {
            command.env(format!("GIT_{role}_NAME"), "Mahavishnu");
            command.env(format!("GIT_{role}_EMAIL"), "mahavishnu@localhost");
        }
    }
    command.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Invalid(
            "git is not installed (not found on PATH); checkpoints need it: install git".into(),
        ),
        _ => Error::io("cannot run git", e),
    })
}
